"""``mudi train``: DreamBooth-LoRA with Seg-Mix (MuDI, paper Sec. 4.1, Appendix A.1) — or Cut-Mix / plain
DreamBooth — for SD1.5, SD2.x, SDXL, FLUX and the tiny offline backbones.

One readable loop (:meth:`LoraTrainer.train_step`): draw instance (and prior) samples → encode with the
frozen VAE → noise at a random timestep → the family's target → ``MSE(instance) + λ·MSE(prior)``
(+ ``β·MSE(f_LoRA, f_base)`` with KL regularization) → AdamW on the LoRA weights only. Text encoders are
frozen, so each distinct prompt is encoded once and cached. ``accelerate`` owns devices, mixed precision
and multi-GPU (``accelerate launch -m mudi.cli train ...``): no code change.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mudi.config import field_help, load_config, save_config, to_dict
from mudi.core.segmix import SegMixParams
from mudi.errors import MudiError

HELP = "Fine-tune a LoRA on your subjects with Seg-Mix (or Cut-Mix / plain DreamBooth)."
log = logging.getLogger(__name__)
SUBJECTS_FILE = "mudi_subjects.json"
CONFIG_FILE = "train_config.yaml"


@dataclass
class TrainConfig:
    backbone: str = field(default="tiny-sd", metadata={
        "help": "model family: sd15, sd2, sdxl, flux, or the offline tiny-sd, tiny-sd2, tiny-sdxl, tiny-flux"})
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
    segmix: SegMixParams = field(default_factory=SegMixParams, metadata={"help": "Seg-Mix scaling and placement"})
    class_data_dir: str | None = field(default=None, metadata={
        "help": "prior (class) image set, e.g. made by `mudi prior`; enables prior preservation"})
    with_prior_preservation: bool = field(default=False, metadata={
        "help": "use the prior-preservation loss (needs class_data_dir)"})
    prior_loss_weight: float = field(default=1.0, metadata={"help": "λ, weight of the prior-preservation loss"})
    kl_weight: float = field(default=0.0, metadata={
        "help": "β of the KL regularizer β·||f_LoRA(x_t) - f_base(x_t)||² (Appendix C.2, C.3); 0 = off"})
    resolution: int | None = field(default=None, metadata={
        "help": "training image size in pixels (default: the family's: 512/768/1024, tiny 64)"})
    train_batch_size: int = field(default=2, metadata={"help": "instance images per step (plus as many priors)"})
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
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: = rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    use_8bit_adam: bool = field(default=False, metadata={"help": "bitsandbytes 8-bit AdamW (pip install mudi[bnb])"})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata={
        "help": "no, fp16 or bf16: frozen weights in that dtype, LoRA weights in float32"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    guidance_scale: float = field(default=1.0, metadata={"help": "FLUX guidance embedding value while training"})
    seed: int = field(default=0, metadata={"help": "seed of LoRA init, data order, noise and timesteps"})
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable checkpoint every N steps"})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "keep only the newest N"})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "'latest' or a checkpoint-<step> folder"})
    report_to: Literal["tensorboard", "none"] = field(default="tensorboard", metadata={
        "help": "tensorboard (logs in OUTPUT_DIR/logs) or none"})
    validation_prompts: list[str] = field(default_factory=list, metadata={
        "help": "prompts ([V1], [V2] = the subjects) rendered every validation_steps"})
    validation_steps: int = field(default=0, metadata={"help": "render validation images every N steps (0 = off)"})
    num_validation_inference_steps: int = field(default=25, metadata={"help": "sampler steps for validation"})
    export: Literal["none", "kohya"] = field(default="none", metadata={
        "help": "also write pytorch_lora_weights_kohya.safetensors for A1111/ComfyUI"})
    device: str | None = field(default=None, metadata={
        "help": "cpu to force the CPU; default: accelerate's choice (the GPU of this process, if any)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if not 0 <= self.composition_prob <= 1:
            raise MudiError(f"composition_prob {self.composition_prob} must be in [0, 1], e.g. 0.3")
        if self.max_composed_subjects < 2:
            raise MudiError(f"max_composed_subjects {self.max_composed_subjects} must be at least 2")
        for name in ("train_batch_size", "max_train_steps", "rank", "checkpointing_steps"):
            if getattr(self, name) < 1:
                raise MudiError(f"{name} {getattr(self, name)} must be at least 1")
        if self.resolution is not None and self.resolution < 16:
            raise MudiError(f"resolution {self.resolution} is too small; use e.g. 512 or 1024")
        if self.learning_rate <= 0:
            raise MudiError(f"learning_rate {self.learning_rate} must be positive, e.g. 1e-4")
        if self.prior_loss_weight < 0 or self.kl_weight < 0:
            raise MudiError("prior_loss_weight and kl_weight must be >= 0")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise MudiError(f"checkpoints_total_limit {self.checkpoints_total_limit} must be at least 1")
        if self.with_prior_preservation and not self.class_data_dir:
            raise MudiError("with_prior_preservation needs a prior image folder: pass --class_data_dir DIR "
                            "(make one with `mudi prior`)")
        if self.class_data_dir:
            self.with_prior_preservation = True

    @property
    def use_prior(self) -> bool:
        return bool(self.class_data_dir)


# ------------------------------------------------------------------------------------------------ the trainer
class LoraTrainer:
    """Everything one run needs, built once; :meth:`train_step` is one optimizer step.

    ``backbone`` may be injected (tests); otherwise it is loaded by name with :func:`load_backbone`.
    """

    def __init__(self, config: TrainConfig, backbone: Any = None) -> None:
        import numpy as np
        import torch
        from accelerate import Accelerator

        from mudi.adapters.registry import BACKBONES, load_backbone
        from mudi.data.subjects import find_subjects, load_subjects
        from mudi.training.data import SampleSource

        self.config = c = config
        self.output_dir = Path(c.output_dir)
        if c.backbone not in BACKBONES and backbone is None:
            load_backbone(c.backbone)  # raises the one-line error with a suggestion
        self.subjects = load_subjects(c.subjects)
        self.prior_subjects = []
        if c.use_prior:
            prior_dir = Path(c.class_data_dir)
            if prior_dir.is_dir() and not any(prior_dir.iterdir()):
                raise MudiError(f"prior folder {prior_dir} is empty; make prior images with `mudi prior` or "
                                "drop --class_data_dir")
            self.prior_subjects = find_subjects(prior_dir)

        self.accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=c.device == "cpu",
                                       log_with="tensorboard" if c.report_to == "tensorboard" else None,
                                       project_dir=str(self.output_dir / "logs"))
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(c.mixed_precision, torch.float32)
        dev = self.accelerator.device
        self.backbone = backbone if backbone is not None else load_backbone(
            c.backbone, c.pretrained_model_name_or_path, device=dev, dtype=self.weight_dtype)
        bb = self.backbone
        self.resolution = int(c.resolution or bb.default_resolution)
        factor = bb.vae_scale_factor * (2 if bb.family == "flux" else 1)
        if self.resolution % factor:
            raise MudiError(f"resolution {self.resolution} is not divisible by {factor} (the {bb.family} VAE"
                            f"{' and packing' if bb.family == 'flux' else ''} factor); use e.g. "
                            f"{self.resolution // factor * factor or factor}")

        src_kw = dict(resolution=self.resolution, mode=c.composition, composition_prob=c.composition_prob,
                      max_composed_subjects=c.max_composed_subjects, segmix=c.segmix)
        self.instances = SampleSource(self.subjects, **src_kw)
        self.priors = SampleSource(self.prior_subjects, is_prior=True, **src_kw) if self.prior_subjects else None

        # LoRA on the denoiser's attention projections; everything else frozen.
        from peft import LoraConfig

        denoiser = bb.denoiser
        for name in ("vae", "text_encoder", "text_encoder_2", "unet", "transformer"):
            module = getattr(bb.pipeline, name, None)
            if module is not None:
                module.requires_grad_(False)
        if hasattr(bb, "guidance_scale"):
            bb.guidance_scale = c.guidance_scale
        lora = LoraConfig(r=c.rank, lora_alpha=c.lora_alpha or c.rank, lora_dropout=c.lora_dropout,
                          init_lora_weights="gaussian", target_modules=bb.lora_target_modules())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)  # the LoRA init draws from the global RNG: make it the run's seed
            denoiser.add_adapter(lora)
        for p in denoiser.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        if c.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        self.params = [p for p in denoiser.parameters() if p.requires_grad]
        self.trainable = {n: p for n, p in denoiser.named_parameters() if p.requires_grad}

        if c.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise MudiError("use_8bit_adam needs bitsandbytes: pip install 'mudi[bnb]' (CUDA only)") from None
            opt_cls = bnb.optim.AdamW8bit
        else:
            opt_cls = torch.optim.AdamW
        optimizer = opt_cls(self.params, lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2),
                            weight_decay=c.adam_weight_decay, eps=c.adam_epsilon)
        from diffusers.optimization import get_scheduler

        try:
            scheduler = get_scheduler(c.lr_scheduler, optimizer=optimizer, num_warmup_steps=c.lr_warmup_steps,
                                      num_training_steps=c.max_train_steps)
        except ValueError as e:
            raise MudiError(f"lr_scheduler {c.lr_scheduler!r}: {e}") from None
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(denoiser, optimizer, scheduler)

        rank = self.accelerator.process_index
        self.data_rng = np.random.default_rng([c.seed, rank])
        self.noise_generator = torch.Generator("cpu").manual_seed(c.seed * 1000 + rank)
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}
        self.global_step = 0

    # --------------------------------------------------------------------------------------------- pieces
    def encode_text(self, prompts: list[str]) -> dict[str, Any]:
        """Cached text-encoder outputs for ``prompts`` (each distinct prompt encoded once, alone, so results
        never depend on which prompts were batched together)."""
        import torch

        for p in prompts:
            if p not in self._text_cache:
                self._text_cache[p] = {k: v.to(self.weight_dtype) for k, v in self.backbone.encode_prompts([p]).items()}
        keys = self._text_cache[prompts[0]].keys()
        return {k: torch.cat([self._text_cache[p][k] for p in prompts]) for k in keys}

    @property
    def num_cached_prompts(self) -> int:
        return len(self._text_cache)

    def draw_batch(self) -> dict[str, list]:
        """``{"instance": [Sample]*B, "prior": [Sample]*B or []}`` from the run's data generator."""
        b = self.config.train_batch_size
        inst = [self.instances.draw(self.data_rng) for _ in range(b)]
        prior = [self.priors.draw(self.data_rng) for _ in range(b)] if self.priors is not None else []
        return {"instance": inst, "prior": prior}

    def train_step(self, batch: dict[str, list], generator: Any = None) -> dict[str, float]:
        """One optimizer step on ``batch``; noise, timesteps and VAE samples come from ``generator`` (default:
        the run's checkpointed noise generator). Returns the loss terms as floats."""
        import torch
        import torch.nn.functional as F

        from mudi.training.data import to_pixels

        gen = generator if generator is not None else self.noise_generator
        bb, acc, c = self.backbone, self.accelerator, self.config
        samples = batch["instance"] + batch["prior"]
        n_inst = len(batch["instance"])
        pixels = to_pixels(samples).to(device=acc.device, dtype=self.weight_dtype)
        with torch.no_grad():
            latents = bb.encode_images(pixels, generator=gen).to(self.weight_dtype)
        noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(latents.device, latents.dtype)
        timesteps = bb.sample_timesteps(latents.shape[0], gen).to(acc.device)
        noisy = bb.add_noise(latents, noise, timesteps)
        target = bb.training_target(latents.float(), noise.float(), timesteps)
        text = self.encode_text([s.prompt for s in samples])

        self.model.train()
        with acc.autocast():
            pred = bb.predict(noisy, timesteps, text, denoiser=self.model).float()
        inst_loss = F.mse_loss(pred[:n_inst], target[:n_inst])
        loss = inst_loss
        out = {"instance_loss": float(inst_loss.detach())}
        if batch["prior"]:
            prior_loss = F.mse_loss(pred[n_inst:], target[n_inst:])
            loss = loss + c.prior_loss_weight * prior_loss
            out["prior_loss"] = float(prior_loss.detach())
        if c.kl_weight > 0:
            base_model = acc.unwrap_model(self.model)
            with torch.no_grad():
                base_model.disable_adapters()
                try:
                    with acc.autocast():
                        base = bb.predict(noisy, timesteps, text, denoiser=base_model).float()
                finally:
                    base_model.enable_adapters()
            kl = F.mse_loss(pred, base)
            loss = loss + c.kl_weight * kl
            out["kl_loss"] = float(kl.detach())
        acc.backward(loss)
        if c.max_grad_norm > 0 and acc.sync_gradients:
            acc.clip_grad_norm_(self.params, c.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"] = float(loss.detach())
        out["lr"] = float(self.lr_scheduler.get_last_lr()[0])
        out["composed_fraction"] = sum(s.num_subjects > 1 for s in samples) / len(samples)
        return out

    # --------------------------------------------------------------------------------------------- state
    def save_checkpoint(self) -> Path | None:
        from mudi.training.checkpoint import save_checkpoint

        if not self.accelerator.is_main_process:
            return None
        return save_checkpoint(self.output_dir, self.global_step, self.trainable, self.optimizer, self.lr_scheduler,
                               self.noise_generator, self.data_rng, self.config.checkpoints_total_limit)

    def resume(self, resume_from_checkpoint: str) -> None:
        from mudi.training.checkpoint import load_checkpoint, resolve_checkpoint

        folder = resolve_checkpoint(self.output_dir, resume_from_checkpoint)
        if folder is None:
            log.info("no checkpoint in %s yet: starting from step 0", self.output_dir)
            return
        self.global_step = load_checkpoint(folder, self.trainable, self.optimizer, self.lr_scheduler,
                                           self.noise_generator, self.data_rng)
        log.info("resumed from %s at step %d", folder, self.global_step)

    def save_outputs(self) -> Path:
        """LoRA weights (+ kohya export), resolved config, subject identifiers and the model card."""
        from mudi.io import write_json_atomic, write_text_atomic
        from mudi.training.lora_io import export_kohya, save_diffusers_lora

        out = self.output_dir
        model = self.accelerator.unwrap_model(self.model)
        path = save_diffusers_lora(self.backbone, model, out)
        if self.config.export == "kohya":
            export_kohya(out, self.backbone.family)
        save_config(self.config, out / CONFIG_FILE)
        write_json_atomic(out / SUBJECTS_FILE, subjects_manifest(self.config, self.backbone, self.subjects))
        write_text_atomic(out / "README.md", model_card(self.config, self.backbone, self.subjects, self.global_step))
        return path

    def validate(self, validation_fn: Any = None) -> list[Path]:
        """Render ``validation_prompts`` (``[Vk]`` → subject k) into ``OUTPUT_DIR/validation/``."""
        import numpy as np
        import torch

        from mudi.core.prompts import fill_placeholders
        from mudi.io import save_image_atomic

        c, bb = self.config, self.backbone
        prompts = [fill_placeholders(p, [s.phrase for s in self.subjects]) for p in c.validation_prompts]
        if not prompts or not self.accelerator.is_main_process:
            return []
        self.model.eval()
        with torch.no_grad():
            if validation_fn is not None:
                images = validation_fn(bb, prompts, self.global_step)
            else:
                images = default_validation(bb, prompts, self.subjects, c, self.resolution)
        paths = []
        for k, img in enumerate(images):
            p = self.output_dir / "validation" / f"step-{self.global_step:06d}-{k}.png"
            save_image_atomic(p, np.asarray(img))
            paths.append(p)
        return paths


def default_validation(backbone: Any, prompts: list[str], subjects: list, config: TrainConfig,
                       resolution: int) -> list[Any]:
    """Validation images through :func:`mudi.generate.generate_images` (mean-shifted init when the subjects
    are segmented), else the plain pipeline."""
    seeds = [config.seed + k for k in range(len(prompts))]
    try:
        from mudi.generate import generate_images
    except ImportError:  # pragma: no cover - generate not installed
        generate_images = None
    if generate_images is not None:
        has_masks = all(im.mask_path is not None for s in subjects for im in s.images)
        out = generate_images(backbone, prompts, seeds, subjects=subjects if has_masks else None,
                              init="mean_shifted" if has_masks and len(subjects) > 1 else "none",
                              num_inference_steps=config.num_validation_inference_steps, height=resolution,
                              width=resolution, progress=False)
        return [g.image for g in out]
    import torch

    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return backbone.pipeline(prompts, generator=gens, num_inference_steps=config.num_validation_inference_steps,
                             height=resolution, width=resolution, output_type="np").images


# ------------------------------------------------------------------------------------------------ outputs
def subjects_manifest(config: TrainConfig, backbone: Any, subjects: list) -> dict:
    """What `mudi generate` reads to name the subjects: identifiers, classes, phrases and folders."""
    rows = [{"name": s.name, "identifier": s.identifier, "class_noun": s.class_noun,
             "descriptive_class": s.descriptive_class, "class_name": s.class_name, "phrase": s.phrase,
             "path": str(s.root) if s.root else None} for s in subjects]
    return {"backbone": config.backbone, "family": backbone.family,
            "pretrained_model_name_or_path": config.pretrained_model_name_or_path, "subjects": rows}


_PIPELINE_NAMES = {"sd15": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
                   "sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}


def model_card(config: TrainConfig, backbone: Any, subjects: list, steps: int) -> str:
    from mudi.core.prompts import segmix_prompt

    base = config.pretrained_model_name_or_path or config.backbone
    prior = f"on (λ = {config.prior_loss_weight:g})" if config.use_prior else "off"
    triggers = "\n".join(f"- `{s.identifier}` — {s.name} ({s.class_name}): say “{s.phrase}”" for s in subjects)
    example = segmix_prompt([s.phrase for s in subjects[:2]])
    return f"""---
library_name: diffusers
base_model: {base}
tags: [lora, text-to-image, dreambooth, mudi, {backbone.family}]
---
# MuDI LoRA: {', '.join(s.name for s in subjects)}

LoRA (rank {config.rank}) for **{base}** ({backbone.family}) trained with `mudi train` for {steps} steps,
composition `{config.composition}` (probability {config.composition_prob}), prior preservation
{prior}.

## Trigger words
{triggers}

## Use
```python
import torch
from diffusers import {_PIPELINE_NAMES.get(backbone.family, "DiffusionPipeline")}
pipe = {_PIPELINE_NAMES.get(backbone.family, "DiffusionPipeline")}.from_pretrained("{base}", torch_dtype=torch.float16).to("cuda")
pipe.load_lora_weights("{config.output_dir}")
image = pipe("{example}").images[0]
```
Or with MuDI's mean-shifted initialisation: `mudi generate --lora {config.output_dir} --prompt "A photo of [V1] and [V2]"`.
The resolved training config is in `{CONFIG_FILE}`, the subjects in `{SUBJECTS_FILE}`.
"""


# ------------------------------------------------------------------------------------------------ the workflow
def run(config: TrainConfig, backbone: Any = None, callback: Any = None, validation_fn: Any = None) -> LoraTrainer:
    """Train and write the outputs; returns the trainer (its ``global_step``, ``backbone``, …).

    ``callback(trainer, batch, losses)`` is called after every step (tests use it to inspect batches).
    ``Ctrl-C`` saves a checkpoint at the current step before re-raising.
    """
    import math
    import time

    import torch
    from tqdm.auto import tqdm

    trainer = LoraTrainer(config, backbone=backbone)
    c, acc = config, trainer.accelerator
    if c.resume_from_checkpoint:
        trainer.resume(c.resume_from_checkpoint)
    if acc.is_main_process:
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, trainer.output_dir / CONFIG_FILE)
    if c.report_to == "tensorboard":
        acc.init_trackers("mudi-train", config={k: v for k, v in _flat(to_dict(config)).items()
                                                if isinstance(v, (int, float, str, bool))})
    bar = tqdm(total=c.max_train_steps, initial=trainer.global_step, desc=f"train {trainer.backbone.family}",
               unit="step", disable=not (c.progress and acc.is_local_main_process))
    OOM = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", RuntimeError))
    try:
        while trainer.global_step < c.max_train_steps:
            t0 = time.perf_counter()
            batch = trainer.draw_batch()
            losses = trainer.train_step(batch)
            trainer.global_step += 1
            if not math.isfinite(losses["loss"]):
                bar.close()
                raise MudiError(
                    f"the loss became {losses['loss']} at step {trainer.global_step} ({trainer.backbone.family}, "
                    f"mixed_precision {c.mixed_precision}, learning_rate {c.learning_rate:g}); stopped without "
                    "writing the LoRA. Try --mixed_precision no (or the other of fp16/bf16) or a lower "
                    "--learning_rate; --resume_from_checkpoint latest continues from the last good checkpoint")
            losses["step_seconds"] = time.perf_counter() - t0
            acc.log(losses, step=trainer.global_step)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{losses['lr']:.1e}")
            if callback is not None:
                callback(trainer, batch, losses)
            if trainer.global_step % c.checkpointing_steps == 0 and trainer.global_step < c.max_train_steps:
                trainer.save_checkpoint()
            if c.validation_steps and trainer.global_step % c.validation_steps == 0:
                trainer.validate(validation_fn)
    except KeyboardInterrupt:
        bar.close()
        path = trainer.save_checkpoint()
        print(f"mudi train: interrupted at step {trainer.global_step}; checkpoint saved to {path}; continue with "
              f"--resume_from_checkpoint latest")
        raise
    except OOM:
        raise MudiError(f"out of GPU memory at batch size {c.train_batch_size}, resolution {trainer.resolution}: "
                        "lower --train_batch_size, add --gradient_checkpointing, --use_8bit_adam or "
                        "--mixed_precision bf16") from None
    bar.close()
    acc.wait_for_everyone()
    if acc.is_main_process:
        path = trainer.save_outputs()
        print(f"mudi train: {trainer.global_step} steps; LoRA written to {path}")
    for tracker in acc.trackers:  # not end_training(): it destroys the process group a caller may still need
        tracker.finish()
    return trainer


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# ------------------------------------------------------------------------------------------------ CLI
_FLAGS = {  # diffusers' names; typed so argparse parses them
    "pretrained_model_name_or_path": str, "output_dir": str, "max_train_steps": int, "learning_rate": float,
    "train_batch_size": int, "checkpointing_steps": int, "checkpoints_total_limit": int,
    "resume_from_checkpoint": str, "seed": int, "rank": int, "resolution": int, "class_data_dir": str,
    "prior_loss_weight": float, "composition_prob": float, "kl_weight": float, "validation_steps": int,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/); flags and key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. segmix.allow_overlap=false")
    p.add_argument("--backbone", help=field_help(TrainConfig, "backbone"))
    p.add_argument("--subjects", nargs="+", metavar="PATH", help=field_help(TrainConfig, "subjects"))
    p.add_argument("--composition", choices=["segmix", "cutmix", "none"], help=field_help(TrainConfig, "composition"))
    for name, tp in _FLAGS.items():
        p.add_argument(f"--{name}", type=tp, help=field_help(TrainConfig, name))
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help=field_help(TrainConfig, "mixed_precision"))
    p.add_argument("--export", choices=["none", "kohya"], help=field_help(TrainConfig, "export"))
    p.add_argument("--validation_prompts", nargs="+", help=field_help(TrainConfig, "validation_prompts"))
    p.add_argument("--report_to", choices=["tensorboard", "none"], help=field_help(TrainConfig, "report_to"))
    p.add_argument("--device", help=field_help(TrainConfig, "device"))
    for name in ("with_prior_preservation", "gradient_checkpointing", "use_8bit_adam"):
        p.add_argument(f"--{name}", action="store_true", default=None, help=field_help(TrainConfig, name))
    p.add_argument("--no_progress", dest="progress", action="store_false", default=None, help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = ["backbone", "subjects", "composition", "mixed_precision", "export", "validation_prompts", "report_to",
             "device", "with_prior_preservation", "gradient_checkpointing", "use_8bit_adam", "progress", *_FLAGS]
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return load_config(TrainConfig, args.config, args.overrides or [], values)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not config.subjects:
        raise MudiError("no subjects given; pass --subjects PATH [PATH ...] (subject or benchmark pair folders)")
    run(config)
    return 0
