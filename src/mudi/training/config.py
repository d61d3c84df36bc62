"""``TrainConfig``: every option of a DreamBooth-LoRA run with Seg-Mix (paper Sec. 4.1, Appendix A.1).

One dataclass: YAML files, ``--flags`` and dotted overrides only fill it (``mudi.config``), and the CLI's
flags are generated from its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mudi.adapters import registry
from mudi.core.segmix import SegMixSettings
from mudi.errors import MudiError

CONFIG_FILE = "train_config.yaml"


@dataclass
class TrainConfig:
    backbone: str = field(default="tiny-sd", metadata={
        "help": f"model family: {', '.join(registry.names('backbone'))} (tiny-*: offline, random weights)"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the family's base checkpoint)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "native subject folders or MuDI benchmark pair folders"})
    output_dir: str = field(default="mudi-lora", metadata={"help": "where the LoRA, checkpoints and logs go"})
    composition: Literal["segmix", "cutmix", "none"] = field(default="segmix", metadata={
        "help": "segmix (MuDI), cutmix (baseline) or none (plain DreamBooth)"})
    composition_prob: float = field(default=0.3, metadata={
        "help": "probability that a sample is a composition of several subjects (paper: 0.3)"})
    max_composed_subjects: int = field(default=2, metadata={
        "help": "compositions hold 2..K distinct subjects, K = this"})
    segmix: SegMixSettings = field(default_factory=SegMixSettings, metadata={
        "help": "Seg-Mix geometry: a preset (auto: the backbone's — sdxl for the UNet families, flux for FLUX — both "
                "the authors' code) and any field to change"})
    segmix_start_step: int = field(default=0, metadata={"help": "compositions only from this step on (authors: 0)"})
    relative_sizes: list[float] = field(default_factory=list, metadata={
        "help": "fixed relative size per subject (in --subjects order) for every composition (Appendix C.1), e.g. "
                "1,2; default: each subject.yaml's relative_size, else random sizes"})
    base_lora: list[str] = field(default_factory=list, metadata={
        "help": "LoRAs fused into the base weights before training a new LoRA on top (modular customization, "
                "iterative training); the KL regularizer then keeps the new model close to the fused one"})
    base_lora_weights: list[float] = field(default_factory=list, metadata={"help": "one weight per base LoRA"})
    class_data_dir: str | None = field(default=None, metadata={
        "help": "prior (class) image set, e.g. made by `mudi prior`; enables prior preservation"})
    with_prior_preservation: bool = field(default=False, metadata={
        "help": "use the prior-preservation loss (needs class_data_dir)"})
    prior_loss_weight: float = field(default=1.0, metadata={"help": "λ, weight of the prior-preservation loss"})
    loss: Literal["mse", "dco"] = field(default="mse", metadata={
        "help": "mse: the DreamBooth loss of the paper (Eq. 2); dco: Direct Consistency Optimization, the authors' "
                "released script (with dco_beta)"})
    dco_beta: float = field(default=1000.0, metadata={"help": "β of the DCO loss (authors: 1000)"})
    soft_alpha: float = field(default=1.0, metadata={
        "help": "loss weight outside the subjects' mask: the per-pixel loss is multiplied by mask·(1-α)+α (1 = no "
                "masking, the authors' default)"})
    loss_mask: Literal["segmix", "all"] = field(default="segmix", metadata={
        "help": "which samples soft_alpha masks: segmix (compositions only, the authors') or all (single photos too, "
                "by their subject masks, as kohya's masked loss)"})
    kl_weight: float = field(default=0.0, metadata={
        "help": "β of the KL regularizer β·||f_LoRA(x_t) - f_base(x_t)||² (Appendix C.2, C.3); 0 = off"})
    resolution: int | None = field(default=None, metadata={
        "help": "training image size in pixels (default: the backbone's, e.g. 1024 for sdxl, 64 for tiny-*)"})
    train_batch_size: int = field(default=2, metadata={
        "help": "instance images per micro-batch (plus as many priors); paper: 2"})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step (authors' SDXL script: batch 1 × 2, FLUX: 1 × 4)"})
    center_crop: bool = field(default=False, metadata={
        "help": "crop single photos at the centre; default: a random crop after resizing the short side (authors)"})
    random_flip: bool = field(default=False, metadata={"help": "flip single photos horizontally at random"})
    aspect_buckets: bool = field(default=False, metadata={
        "help": "train each single photo at the aspect-ratio bucket nearest its aspect (area about resolution², "
                "sides multiples of bucket_step) instead of a square crop; a micro-batch holds one bucket, its first "
                "sample picks it; compositions stay square (docs/train.md); off: the authors' square crops"})
    bucket_max_ratio: float = field(default=2.0, metadata={
        "help": "aspect_buckets: the most elongated bucket's long/short side ratio (kohya: 2.0)"})
    bucket_step: int = field(default=0, metadata={
        "help": "aspect_buckets: bucket sides are multiples of this many pixels (0: the backbone's pixel multiple, "
                "e.g. 8 for SD; kohya: 64)"})
    max_train_steps: int = field(default=1200, metadata={"help": "optimizer steps (paper: 1200-1600)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW β1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW β2"})
    adam_weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW ε"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    lr_scheduler: str = field(default="constant", metadata={
        "help": "diffusers scheduler name: constant, constant_with_warmup, linear, cosine, ..."})
    lr_warmup_steps: int = field(default=0, metadata={"help": "warm-up steps of the LR scheduler"})
    rank: int = field(default=32, metadata={"help": "LoRA rank (paper: 32)"})
    lora_target_modules: list[str] = field(default_factory=list, metadata={
        "help": "modules the LoRA trains: empty = the backbone's default (the attention projections to_q, to_k, "
                "to_v, to_out.0, as the authors), a preset name (flux: diffusers = also the added projections), or "
                "module names"})
    train_modifier_tokens: bool = field(default=False, metadata={
        "help": "Custom Diffusion's modifier tokens: a new token <identifier> per subject whose input embedding "
                "trains with the LoRA (everything else in the text encoders frozen); prompts keep the identifier, "
                "written as the token; saved as modifier_token_<identifier>.safetensors (diffusers' "
                "load_textual_inversion). With lora_target_modules: [custom-diffusion] (cross-attention K/V): Custom "
                "Diffusion as the paper's Appendix B.1 (SD and SDXL families)"})
    train_lora: bool = field(default=True, metadata={
        "help": "train a LoRA on the denoiser; false with train_modifier_tokens: Textual Inversion (Gal et al.), only "
                "a new token embedding per subject trains (every text encoder of the family) and the folder holds "
                "modifier_token_<identifier>.safetensors and no LoRA"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: = rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    use_8bit_adam: bool = field(default=False, metadata={"help": "bitsandbytes 8-bit AdamW (pip install mudi[bnb])"})
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = field(default="auto", metadata={
        "help": "frozen weights in this dtype, LoRA weights in float32; auto: bf16 on a GPU that has it (else "
                "fp16), no (float32) on the CPU"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (exact)"})
    cache_latents: bool = field(default=False, metadata={
        "help": "encode each photo whose pixels never change (centre crop, or square at the resolution; no flip) "
                "once, keeping its VAE posterior; a new sample is still drawn every step (exact)"})
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "processes composing the Seg-Mix samples ahead of the GPU (exact: a batch is drawn from its own "
                "seeded generator whichever process draws it)"})
    fused_optimizer: bool = field(default=False, metadata={
        "help": "PyTorch's fused AdamW kernel (not bit-identical to the default one: equal within float rounding)"})
    channels_last: bool = field(default=False, metadata={
        "help": "channels-last memory for the UNet's convolutions (equal within float rounding)"})
    compile: Literal["none", "regional"] = field(default="none", metadata={
        "help": "torch.compile the denoiser's repeated transformer blocks one by one (regional: short start-up); "
                "equal within float rounding"})
    quantize_base: Literal["none", "int8", "nf4"] = field(default="none", metadata={
        "help": "load the frozen denoiser in 8-bit or NF4 4-bit (bitsandbytes, CUDA; QLoRA-style memory recipes); "
                "changes the base model's outputs slightly"})
    fp8_base_weights: bool = field(default=False, metadata={
        "help": "FP8 matmuls for the frozen base weights (torchao; H100-class GPUs); changes the loss slightly"})
    guidance_scale: float = field(default=1.0, metadata={
        "help": "guidance-embedding value while training, for guidance-distilled models (FLUX.1-dev)"})
    seed: int = field(default=42, metadata={"help": "seed of LoRA init, data order, noise and timesteps (authors: 42)"})
    vae: str | None = field(default=None, metadata={
        "help": "VAE folder or hub id replacing the pipeline's, e.g. madebyollin/sdxl-vae-fp16-fix (authors' SDXL)"})
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable checkpoint every N steps"})
    save_steps: int = field(default=0, metadata={
        "help": "also save a loadable LoRA in snapshot-N/ every N steps (authors: 200; the paper picks the step per "
                "pair); 0 = off"})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "keep only the newest N"})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "'latest' or a checkpoint-<step> folder; the run's config must match the saved one except for "
                "steps, checkpointing, logging, validation and device"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the training run already in output_dir (its checkpoints, LoRA and logs)"})
    report_to: Literal["tensorboard", "wandb", "none"] = field(default="tensorboard", metadata={
        "help": "tensorboard (logs in OUTPUT_DIR/logs), wandb (Weights & Biases, mudi[wandb]; the run in "
                "OUTPUT_DIR/wandb, resumed into the same wandb run; WANDB_MODE=offline honoured) or none"})
    validation_prompts: list[str] = field(default_factory=list, metadata={
        "help": "prompts ([V1], [V2] = the subjects) rendered every validation_steps"})
    validation_steps: int = field(default=0, metadata={"help": "render validation images every N steps (0 = off)"})
    num_validation_inference_steps: int = field(default=25, metadata={"help": "sampler steps for validation"})
    export: Literal["none", "kohya"] = field(default="none", metadata={
        "help": "also write pytorch_lora_weights_kohya.safetensors for A1111/ComfyUI"})
    device: Literal["auto", "cpu"] = field(default="auto", metadata={
        "help": "auto: accelerate's choice (this process's GPU when there is one, else the CPU); cpu forces the "
                "CPU (pick GPUs with CUDA_VISIBLE_DEVICES or `accelerate launch`)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if self.report_to == "wandb":
            from mudi.training.trackers import check_tracker

            check_tracker(self.report_to)  # a missing package is one line before any model loads
        if not 0 <= self.composition_prob <= 1:
            raise MudiError(f"composition_prob {self.composition_prob} must be in [0, 1], e.g. 0.3")
        if self.max_composed_subjects < 2:
            raise MudiError(f"max_composed_subjects {self.max_composed_subjects} must be at least 2")
        for name in ("train_batch_size", "max_train_steps", "rank", "checkpointing_steps",
                     "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise MudiError(f"{name} {getattr(self, name)} must be at least 1")
        if self.resolution is not None and self.resolution < 16:
            raise MudiError(f"resolution {self.resolution} is too small; use e.g. 512 or 1024")
        if self.learning_rate <= 0:
            raise MudiError(f"learning_rate {self.learning_rate} must be positive, e.g. 1e-4")
        if self.prior_loss_weight < 0 or self.kl_weight < 0 or self.dco_beta <= 0:
            raise MudiError("prior_loss_weight and kl_weight must be >= 0, dco_beta > 0")
        if not 0 <= self.soft_alpha <= 1:
            raise MudiError(f"soft_alpha {self.soft_alpha} must be in [0, 1] (1: no loss masking)")
        if self.base_lora_weights and len(self.base_lora_weights) != len(self.base_lora):
            raise MudiError(f"{len(self.base_lora_weights)} base_lora_weights for {len(self.base_lora)} base_lora: give "
                            "one per LoRA")
        if any(r <= 0 for r in self.relative_sizes):
            raise MudiError(f"relative_sizes {self.relative_sizes} must all be positive, e.g. 1,2")
        if self.dataloader_num_workers < 0:
            raise MudiError(f"dataloader_num_workers {self.dataloader_num_workers} must be >= 0")
        if self.bucket_max_ratio < 1 or self.bucket_step < 0:
            raise MudiError(f"bucket_max_ratio {self.bucket_max_ratio} must be >= 1 (e.g. 2.0) and bucket_step "
                            f"{self.bucket_step} >= 0 (0: the backbone's pixel multiple)")
        if self.save_steps < 0 or self.segmix_start_step < 0:
            raise MudiError("save_steps and segmix_start_step must be >= 0")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise MudiError(f"checkpoints_total_limit {self.checkpoints_total_limit} must be at least 1")
        if self.with_prior_preservation and not self.class_data_dir:
            raise MudiError("with_prior_preservation needs a prior image folder: pass --class_data_dir DIR "
                            "(make one with `mudi prior`)")
        if self.class_data_dir:
            self.with_prior_preservation = True
        if not self.train_lora and not self.train_modifier_tokens:
            raise MudiError("--no-train_lora (train_lora: false) trains nothing: add --train_modifier_tokens "
                            "(Textual Inversion) or keep the LoRA")
        if not self.train_lora and (self.loss == "dco" or self.kl_weight > 0 or self.export == "kohya"):
            raise MudiError("Textual Inversion (train_lora false) has no LoRA to compare with the base model or to "
                            "export: use loss mse, kl_weight 0 and export none")
        if self.overwrite and self.resume_from_checkpoint:
            raise MudiError("--overwrite replaces the run in output_dir, --resume_from_checkpoint continues it: "
                            "give one of them")

    @property
    def use_prior(self) -> bool:
        return bool(self.class_data_dir)
