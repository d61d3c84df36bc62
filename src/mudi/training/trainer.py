"""The trainer of ``mudi train``: DreamBooth-LoRA with Seg-Mix (MuDI, paper Sec. 4.1, Appendix A.1) — or
Cut-Mix / plain DreamBooth — for every registered backbone.

One readable step (:meth:`LoraTrainer.train_step`): draw instance (and prior) samples → encode with the
frozen VAE → noise at a random timestep → the family's target → ``MSE(instance) + λ·MSE(prior)``
(+ ``β·MSE(f_LoRA, f_base)`` with KL regularization) → AdamW on the LoRA weights only. Text encoders are
frozen, so each distinct prompt is encoded once and cached. ``accelerate`` owns devices, mixed precision
and multi-GPU (``accelerate launch -m mudi.cli train ...``): no code change. Every family difference is a
member of the backbone (:class:`mudi.adapters.base.Backbone`); nothing here names a family.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from mudi.adapters import registry
from mudi.adapters.base import check_image_size
from mudi.adapters.weights import load_vae
from mudi.config import to_dict
from mudi.core.prompts import fill_placeholders
from mudi.core.segmix import SegMixParams
from mudi.data.manifests import write_subjects_manifest
from mudi.data.subjects import find_subjects, load_subjects
from mudi.errors import MudiError
from mudi.io import atomic_dir, save_image_atomic, write_text_atomic
from mudi.sampling.images import generate_images
from mudi.sampling.loras import check_lora_family
from mudi.training.batches import BatchDataset, draw_micro_batch
from mudi.training.buckets import training_buckets
from mudi.training.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from mudi.training.config import TrainConfig
from mudi.training.data import Sample, SampleSource, to_pixels
from mudi.training.lora_io import export_kohya, save_diffusers_lora
from mudi.training.lora_setup import add_lora, fuse_base_loras
from mudi.training.losses import mask_weights, training_loss
from mudi.training.modifier_tokens import ModifierTokens
from mudi.training.outputs import model_card
from mudi.training.runs import check_resume, saved_config, write_run_config
from mudi.training.speed import apply_speed_options
from mudi.training.trackers import log_with

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)


def resolve_mixed_precision(config: TrainConfig) -> str:
    """``auto`` → ``bf16`` on a CUDA GPU that supports it, ``fp16`` on other CUDA GPUs, ``no`` on the CPU."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    if config.device == "cpu" or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class LoraTrainer:
    """Everything one run needs, built once; :meth:`train_step` is one optimizer step.

    ``backbone`` may be injected (tests); otherwise it is loaded by name with :func:`load_backbone`.
    """

    def __init__(self, config: TrainConfig, backbone: Backbone | None = None) -> None:
        self.config = dataclasses.replace(config, mixed_precision=resolve_mixed_precision(config))
        self.output_dir = Path(self.config.output_dir)
        self._read_subjects(check_name=backbone is None)
        self._load_model(backbone)
        self._build_sources()
        self._add_lora()
        self._build_optimizer()
        rank = self.accelerator.process_index
        self.noise_generator = torch.Generator("cpu").manual_seed(self.config.seed * 1000 + rank)
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}
        self.latent_cache: dict[tuple, torch.Tensor] = {}
        self.global_step = 0
        self.last_saved_step = -1
        self.last_checkpoint: Path | None = None

    # --------------------------------------------------------------------------------------------- building
    def _read_subjects(self, check_name: bool) -> None:
        """The subjects and the prior set, read (and a mistyped backbone refused) before any model loads."""
        c = self.config
        if check_name:
            registry.check("backbone", [c.backbone])  # a typo fails before the subjects are read
        check_lora_family(c.base_lora, c.backbone)
        self.subjects = load_subjects(c.subjects)
        self.prior_subjects = []
        if c.use_prior:
            prior_dir = Path(c.class_data_dir)
            if prior_dir.is_dir() and not any(prior_dir.iterdir()):
                raise MudiError(f"prior folder {prior_dir} is empty; make prior images with `mudi prior` or "
                                "drop --class_data_dir")
            self.prior_subjects = find_subjects(prior_dir)

    def _load_model(self, backbone: Backbone | None) -> None:
        """The accelerator (device, mixed precision), the backbone in the weight dtype, its VAE and base LoRAs."""
        c = self.config
        self.accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=c.device == "cpu",
                                       log_with=log_with(c.report_to),
                                       project_dir=str(self.output_dir / "logs"))
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(c.mixed_precision, torch.float32)
        dev = self.accelerator.device
        quant = None if c.quantize_base == "none" else c.quantize_base
        self.backbone = backbone if backbone is not None else registry.load_backbone(
            c.backbone, c.pretrained_model_name_or_path, device=dev, dtype=self.weight_dtype, quantization=quant)
        bb = self.backbone
        self.resolution = int(c.resolution or bb.default_resolution)
        check_image_size(bb, self.resolution, self.resolution, "resolution")
        if c.vae:  # e.g. madebyollin/sdxl-vae-fp16-fix, as the authors train SDXL
            bb.pipeline.vae = load_vae(c.vae, device=dev, dtype=self.weight_dtype)
        if bb.train_vae_in_float32:  # SDXL's VAE overflows in fp16: encode in float32, as diffusers' scripts do
            bb.pipeline.vae.to(torch.float32)
        if c.base_lora:  # modular customization / iterative training: train on top of these, fused
            fuse_base_loras(bb, c.base_lora, c.base_lora_weights)

    def _build_sources(self) -> None:
        """Where samples come from: the subjects (Seg-Mix / Cut-Mix compositions or single photos), the priors."""
        c = self.config
        self.segmix_params = c.segmix.resolve(self.backbone.segmix_preset)
        src_kw = dict(resolution=self.resolution, mode=c.composition, composition_prob=c.composition_prob,
                      max_composed_subjects=c.max_composed_subjects, segmix=self.segmix_params,
                      center_crop=c.center_crop, random_flip=c.random_flip, loss_mask=c.loss_mask,
                      buckets=training_buckets(c, self.backbone.pixel_multiple, self.resolution))
        rel = list(c.relative_sizes) or ([s.relative_size or 1.0 for s in self.subjects]
                                         if any(s.relative_size for s in self.subjects) else None)
        self.instances = SampleSource(self.subjects, relative_sizes=rel, **src_kw)
        self.priors = SampleSource(self.prior_subjects, is_prior=True, **src_kw) if self.prior_subjects else None
        if self.priors is not None:
            missing = sorted({s.class_name for s in self.subjects} - set(self.priors.class_names()))
            if missing:
                log.warning("warning: the prior set has no class %s; those subjects' prior samples use random "
                            "prior classes (make priors with `mudi prior --subjects ...`)", missing)

    def _add_lora(self) -> None:
        """LoRA on the denoiser's attention projections (seeded by the run) and/or trained token embeddings
        (Custom Diffusion, Textual Inversion); everything else frozen."""
        bb, c = self.backbone, self.config
        denoiser = bb.denoiser
        bb.training_guidance_scale = c.guidance_scale
        add_lora(bb, c)
        if c.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        apply_speed_options(bb, c)
        self.tokens = (ModifierTokens(bb, self.subjects, self.accelerator.num_processes)  # Custom Diffusion
                       if c.train_modifier_tokens else None)
        extra = self.tokens.trainable() if self.tokens is not None else {}
        self.params = [p for p in denoiser.parameters() if p.requires_grad] + list(extra.values())
        self.trainable = {**{n: p for n, p in denoiser.named_parameters() if p.requires_grad}, **extra}

    def _build_optimizer(self) -> None:
        """AdamW (or 8-bit AdamW) on the LoRA weights, the learning-rate schedule, both prepared by accelerate."""
        c = self.config
        if c.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise MudiError("use_8bit_adam needs bitsandbytes: pip install 'mudi[bnb]' (CUDA only)") from None
            opt_cls = bnb.optim.AdamW8bit
        else:
            opt_cls = torch.optim.AdamW
        extra = {"fused": True} if c.fused_optimizer and not c.use_8bit_adam else {}
        optimizer = opt_cls(self.params, lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2),
                            weight_decay=c.adam_weight_decay, eps=c.adam_epsilon, **extra)
        try:
            scheduler = get_scheduler(c.lr_scheduler, optimizer=optimizer, num_warmup_steps=c.lr_warmup_steps,
                                      num_training_steps=c.max_train_steps)
        except ValueError as e:
            raise MudiError(f"lr_scheduler {c.lr_scheduler!r}: {e}") from None
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.backbone.denoiser, optimizer,
                                                                                 scheduler)

    # --------------------------------------------------------------------------------------------- pieces
    def encode_text(self, prompts: list[str]) -> dict[str, Any]:
        """Cached text-encoder outputs for ``prompts`` (each distinct prompt encoded once, alone, so results
        never depend on which prompts were batched together); trained modifier tokens: encoded every step."""
        if self.tokens is not None:
            encoded = [self.tokens.encode(p) for p in prompts]
            return {k: cat_text([e[k].to(self.weight_dtype) for e in encoded]) for k in encoded[0]}
        for p in prompts:
            if p not in self._text_cache:
                self._text_cache[p] = {k: v.to(self.weight_dtype) for k, v in self.backbone.encode_prompts([p]).items()}
        keys = self._text_cache[prompts[0]].keys()
        return {k: cat_text([self._text_cache[p][k] for p in prompts]) for k in keys}

    @property
    def num_cached_prompts(self) -> int:
        return len(self._text_cache)

    def batch_rng(self, index: int) -> np.random.Generator:
        """The data generator of micro-batch ``index`` (step × accumulation + micro-batch): seeded by the run's
        seed, this process's rank and the index alone, so a batch is the same whichever DataLoader worker
        draws it, and a resumed run draws exactly what the uninterrupted one would."""
        return np.random.default_rng([self.config.seed, self.accelerator.process_index, index])

    def draw_batch(self, index: int | None = None) -> dict[str, list]:
        """``{"instance": [Sample]*B, "prior": [Sample]*B or []}`` of micro-batch ``index`` (default: the
        first of the current step): compositions from ``segmix_start_step`` on, each prior sample coupled to
        its instance sample."""
        if index is None:
            index = self.global_step * self.config.gradient_accumulation_steps
        return draw_micro_batch(self.instances, self.priors, self.subjects, self.config, self.batch_rng(index),
                                index // self.config.gradient_accumulation_steps)

    def posterior(self, samples: list) -> torch.Tensor:
        """``(B, 2C, h, w)``: each sample's VAE posterior parameters, encoded one sample at a time (so a sample's
        latents never depend on which samples share its batch) or taken from the latent cache."""
        out = []
        for s in samples:
            cached = self.latent_cache.get(s.cache_key) if s.cache_key is not None else None
            if cached is None:
                pixels = to_pixels([s]).to(device=self.accelerator.device, dtype=self.weight_dtype)
                cached = self.backbone.encode_distribution(pixels)[0]
                if s.cache_key is not None and self.config.cache_latents:
                    self.latent_cache[s.cache_key] = cached
            out.append(cached)
        return torch.stack(out)

    def fill_latent_cache(self) -> int:
        """Encode every photo whose pixels never change (``cache_latents``), once; returns how many."""
        sources = [self.instances] + ([self.priors] if self.priors is not None else [])
        todo = [(k, img) for src in sources for k, img in src.fixed_photos() if k not in self.latent_cache]
        with torch.no_grad():
            for key, img in tqdm(todo, desc="cache latents", unit="img", disable=not self.config.progress):
                pixels = to_pixels([Sample(img, "")]).to(device=self.accelerator.device, dtype=self.weight_dtype)
                self.latent_cache[key] = self.backbone.encode_distribution(pixels)[0]
        return len(todo)

    def loss_weights(self, samples: list, latent_hw: tuple[int, int]) -> torch.Tensor | None:
        """``(B, 1, h, w)`` per-pixel loss weights: each sample's mask bilinearly downsampled to the latent grid,
        times ``1 - soft_alpha``, plus ``soft_alpha``; samples without a mask get ones. None when
        ``soft_alpha`` is 1 (the default: no weighting)."""
        return mask_weights([s.mask for s in samples], self.resolution, latent_hw, self.config.soft_alpha,
                            self.accelerator.device)

    def train_step(self, batch: dict[str, list] | list[dict[str, list]], generator: Any = None) -> dict[str, float]:
        """One optimizer step on ``batch`` — or on several micro-batches, their gradients accumulated
        (``gradient_accumulation_steps``); noise, timesteps and VAE samples come from ``generator`` (default: the
        run's checkpointed noise generator). Returns the loss terms as floats (means over micro-batches)."""
        gen = generator if generator is not None else self.noise_generator
        acc, c = self.accelerator, self.config
        batches = [batch] if isinstance(batch, dict) else list(batch)
        totals: dict[str, float] = {}
        for k, b in enumerate(batches):
            last = k == len(batches) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                for name, v in self._backward(b, gen, 1.0 / len(batches)).items():
                    totals[name] = totals.get(name, 0.0) + v / len(batches)
        if c.max_grad_norm > 0:
            acc.clip_grad_norm_(self.params, c.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals["lr"] = float(self.lr_scheduler.get_last_lr()[0])
        return totals

    def _backward(self, batch: dict[str, list], gen: Any, scale: float) -> dict[str, float]:
        """The loss of one micro-batch (:func:`mudi.training.losses.training_loss`: ``MSE(instance) + λ·MSE(prior)``,
        DCO, KL), back-propagated times ``scale``: encode → noise at a random timestep → the family's target →
        the LoRA model's prediction (and the base model's, when a term needs it)."""
        bb, acc, c = self.backbone, self.accelerator, self.config
        samples = batch["instance"] + batch["prior"]
        n_inst = len(batch["instance"])
        with torch.no_grad():
            latents = bb.latents_from_distribution(self.posterior(samples), gen).to(self.weight_dtype)
        noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(latents.device, latents.dtype)
        timesteps = bb.sample_timesteps(latents.shape[0], gen).to(acc.device)
        noisy = bb.add_noise(latents, noise, timesteps)
        target = bb.training_target(latents.float(), noise.float(), timesteps)
        text = self.encode_text([s.prompt for s in samples])
        weight = self.loss_weights(samples, tuple(latents.shape[2:]))

        self.model.train()
        with acc.autocast():
            pred = bb.predict(noisy, timesteps, text, denoiser=self.model).float()
        ref = self._reference_prediction(noisy, timesteps, text) if c.loss == "dco" or c.kl_weight > 0 else None
        loss, out = training_loss(pred, target, ref, weight, n_inst, c)
        acc.backward(loss * scale if scale != 1.0 else loss)
        out["loss"] = float(loss.detach())
        out["composed_fraction"] = sum(s.num_subjects > 1 for s in samples) / len(samples)
        return out

    def _reference_prediction(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: dict) -> torch.Tensor:
        """The denoiser's output with the LoRA disabled (the frozen base model), without gradients."""
        base_model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            base_model.disable_adapters()
            try:
                with self.accelerator.autocast():
                    return self.backbone.predict(noisy, timesteps, text, denoiser=base_model).float()
            finally:
                base_model.enable_adapters()

    def step(self, batches: list[dict[str, list]] | None = None) -> tuple[list[dict[str, list]], dict[str, float]]:
        """One optimizer step on this step's ``gradient_accumulation_steps`` micro-batches (drawn here unless a
        DataLoader already did)."""
        if batches is None:
            first = self.global_step * self.config.gradient_accumulation_steps
            batches = [self.draw_batch(first + k) for k in range(self.config.gradient_accumulation_steps)]
        return batches, self.train_step(batches)

    def save_snapshot(self) -> Path | None:
        """``OUTPUT_DIR/snapshot-<step>/``: a loadable diffusers LoRA of the current weights (with the run's
        ``mudi_subjects.json``), for ``mudi generate --lora OUTPUT_DIR/snapshot-<step>`` and
        ``pipe.load_lora_weights``; checkpoints for resuming are separate."""
        if not self.accelerator.is_main_process:
            return None
        folder = self.output_dir / f"snapshot-{self.global_step}"
        model = self.accelerator.unwrap_model(self.model)
        with atomic_dir(folder) as tmp:
            if self.config.train_lora:
                save_diffusers_lora(self.backbone, model, tmp)
            if self.tokens is not None:
                self.tokens.save(tmp)
            write_subjects_manifest(tmp, self.subjects, backbone=self.config.backbone, family=self.backbone.family,
                                    pretrained_model_name_or_path=self.config.pretrained_model_name_or_path,
                                    step=self.global_step)
        return folder

    # --------------------------------------------------------------------------------------------- state
    def save_checkpoint(self) -> Path | None:
        """A checkpoint at the current step (once per step: a second call at the same step does nothing)."""
        if not self.accelerator.is_main_process:
            return None
        if self.last_saved_step == self.global_step and self.last_checkpoint is not None:
            return self.last_checkpoint
        self.last_checkpoint = save_checkpoint(self.output_dir, self.global_step, self.trainable, self.optimizer,
                                               self.lr_scheduler, self.noise_generator,
                                               self.config.checkpoints_total_limit, config=to_dict(self.config))
        self.last_saved_step = self.global_step
        return self.last_checkpoint

    def resume(self, resume_from_checkpoint: str) -> dict[str, tuple]:
        """Continue from a checkpoint (``latest`` or a folder) after checking that this run's config matches the
        saved one (:func:`mudi.training.runs.check_resume`); returns the accepted changes."""
        data = resolve_checkpoint(self.output_dir, resume_from_checkpoint)
        if data is None:
            log.info("no checkpoint in %s yet: starting from step 0", self.output_dir)
            return check_resume(saved_config(self.output_dir), self.config, self.output_dir)
        changes = check_resume(data.config or saved_config(data.folder.parent), self.config, data.folder)
        self.global_step = load_checkpoint(data, self.trainable, self.optimizer, self.lr_scheduler,
                                           self.noise_generator)
        self.last_saved_step, self.last_checkpoint = self.global_step, data.folder
        log.info("resumed from %s at step %d", data.folder, self.global_step)
        return changes

    def save_outputs(self) -> Path:
        """LoRA weights (+ kohya export), resolved config, subject identifiers and the model card."""
        out = self.output_dir
        model = self.accelerator.unwrap_model(self.model)
        path = save_diffusers_lora(self.backbone, model, out) if self.config.train_lora else None
        if self.tokens is not None:
            token_paths = self.tokens.save(out)
            path = path or token_paths[0]
        if self.config.export == "kohya":
            export_kohya(out, self.backbone)
        write_run_config(out, self.config)
        write_subjects_manifest(out, self.subjects, backbone=self.config.backbone, family=self.backbone.family,
                                pretrained_model_name_or_path=self.config.pretrained_model_name_or_path)
        write_text_atomic(out / "README.md", model_card(self.config, self.backbone, self.subjects, self.global_step))
        return path

    def validate(self, validation_fn: Any = None) -> list[Path]:
        """Render ``validation_prompts`` (``[Vk]`` → subject k) into ``OUTPUT_DIR/validation/``."""
        c, bb = self.config, self.backbone
        prompts = [fill_placeholders(p, [s.phrase for s in self.subjects]) for p in c.validation_prompts]
        if not prompts or not self.accelerator.is_main_process:
            return []
        self.model.eval()
        with torch.no_grad():
            if validation_fn is not None:
                images = validation_fn(bb, prompts, self.global_step)
            else:
                images = default_validation(bb, prompts, self.subjects, c, self.resolution, self.segmix_params)
        paths = []
        for k, img in enumerate(images):
            p = self.output_dir / "validation" / f"step-{self.global_step:06d}-{k}.png"
            save_image_atomic(p, np.asarray(img))
            paths.append(p)
        return paths


def batch_loader(trainer: LoraTrainer) -> Any:
    """An iterator over the remaining micro-batches, composed in ``dataloader_num_workers`` processes."""
    c = trainer.config
    start, stop = trainer.global_step * c.gradient_accumulation_steps, c.max_train_steps * c.gradient_accumulation_steps
    dataset = BatchDataset(trainer.instances, trainer.priors, trainer.subjects, c, trainer.accelerator.process_index,
                           start, stop)
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False,
                                            num_workers=c.dataloader_num_workers, prefetch_factor=4,
                                            persistent_workers=False))


def cat_text(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One batch of text-encoder outputs: where a family's text length varies per prompt (Qwen-Image, Z-Image),
    each ``(1, L, ...)`` tensor is zero-padded along ``L`` to the longest, and the family's mask (also padded with
    zeros) marks the padding, as diffusers' examples batch them."""
    n = max(t.shape[1] for t in tensors) if tensors[0].ndim > 1 else 0
    return torch.cat([t if t.ndim < 2 or t.shape[1] == n else F.pad(t, (0, 0) * (t.ndim - 2) + (0, n - t.shape[1]))
                      for t in tensors])


def default_validation(backbone: Backbone, prompts: list[str], subjects: list, config: TrainConfig,
                       resolution: int, segmix: Any = None) -> list[Any]:
    """Validation images through :func:`mudi.sampling.images.generate_images` (the backbone's default init —
    mean-shifted, FLUX none — when the subjects are segmented, else the plain pipeline)."""
    seeds = [config.seed + k for k in range(len(prompts))]
    has_masks = all(im.mask_path is not None for s in subjects for im in s.images)
    out = generate_images(backbone, prompts, seeds, subjects=subjects if has_masks else None,
                          init="auto" if has_masks and len(subjects) > 1 else "none",
                          num_inference_steps=config.num_validation_inference_steps, height=resolution,
                          width=resolution, progress=False, segmix_params=segmix or SegMixParams())
    return [g.image for g in out]
