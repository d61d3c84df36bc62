"""``mudi generate`` as a library call: generate into a folder with sidecars, inits and a grid.

Outputs in ``output_dir``: ``NNNN_seedS.png`` images and a ``NNNN_seedS.json`` sidecar each (prompt, seed,
γ, layout boxes, LoRA, model, versions); ``init/NNNN_seedS.png`` (the composition ``x_init``) and
``init/NNNN_seedS_mask.png`` (label map: 0 = background, k = the k-th subject); ``grid/grid.png`` (images
over their inits); ``generate_config.yaml`` (the resolved config). Extras live in sub-folders so that
``mudi evaluate --images OUTPUT_DIR`` sees only the generated images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from mudi.adapters import registry
from mudi.adapters.weights import load_vae
from mudi.config import save_config
from mudi.core.init_latents import default_gamma
from mudi.data.generated import sidecar, write_generated
from mudi.data.images import read_image
from mudi.data.layouts import load_layout
from mudi.data.manifests import entry_phrase, read_lora_subjects, subjects_of_manifest
from mudi.data.subjects import load_subjects
from mudi.devices import describe, place_config
from mudi.environment import package_versions
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, save_image_atomic
from mudi.sampling.config import CONFIG_FILE, GenerateConfig
from mudi.sampling.images import GeneratedImage, generate_images, resolve_prompt
from mudi.sampling.init import resolve_init
from mudi.sampling.layout_llm import llm_layout_or_none
from mudi.sampling.loras import check_lora_family, loras_applied
from mudi.visualize import image_grid, label_map

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)


def generate_to_folder(config: GenerateConfig, backbone: Backbone | None = None) -> list[GeneratedImage]:
    """Load the model (or use ``backbone``), apply LoRAs, resolve subjects/prompt/layout, generate, write.

    Everything a person could get wrong (subjects, masks, prompt, layout, sizes, LoRA paths and families, the
    output folder) is checked before a model loads; each batch's images are written as soon as they exist.
    ``init: auto`` becomes the backbone's default here (FLUX: none), and the written config says which.
    """
    config = dataclasses.replace(config, init=resolve_init(config.init, backbone, config.backbone))
    lora_rows = read_lora_subjects(config.lora)
    if config.subjects:
        subjects = load_subjects(config.subjects)
    elif lora_rows and (config.init == "mean_shifted" or config.region_control):
        subjects = subjects_of_manifest(lora_rows)
    else:
        subjects = []
    if lora_rows and subjects:
        known = {str(r.get("identifier", "")) for r in lora_rows}
        strangers = [s.name for s in subjects if s.identifier not in known]
        if strangers:
            log.warning("subjects %s are not among the LoRA's (%s): was it trained on them?", strangers,
                        ", ".join(sorted(known)))
    phrases = [s.phrase for s in subjects] if subjects else [entry_phrase(r) for r in (lora_rows or [])]
    if config.init == "mean_shifted" and not subjects:
        raise MudiError("the mean-shifted init needs the subjects' segmented reference images: pass --subjects "
                        "PATH [PATH ...] (or use --init none)")
    if config.region_control and not subjects:
        raise MudiError("--region_control needs the subjects (their boxes come from a layout of their segmented "
                        "photos): pass --subjects PATH [PATH ...], or a LoRA with its subjects file")
    use_layout = config.init == "mean_shifted" or config.region_control
    prompt = resolve_prompt(config.prompt, phrases, config.use_count_prefix, config.count_noun)
    if config.init == "mean_shifted":
        warn_unnamed_subjects(config.prompt, prompt, subjects)
    if config.relative_sizes is not None and len(config.relative_sizes) != len(subjects):
        raise MudiError(f"--relative-sizes has {len(config.relative_sizes)} value(s) for {len(subjects)} subjects "
                        f"({', '.join(s.name for s in subjects)}): give one per subject")
    for s in subjects:  # decode and validate every reference image before loading a model
        s.cutouts(max_side=max(config.height or 1024, config.width or 1024))
    boxes, layout_name = None, "random" if config.relative_sizes is None else "relative"
    if use_layout and config.layout.endswith(".json"):
        boxes = load_layout(config.layout, [[s.identifier, s.name, s.phrase] for s in subjects])
        layout_name = "boxes"
    elif use_layout and config.layout == "llm":
        boxes = llm_layout_or_none(prompt, [s.phrase for s in subjects], config.llm_url or "", config.llm_model)
        layout_name = "llm" if boxes is not None else "random (llm failed)"
    check_lora_family(config.lora, config.backbone)
    out = prepare_output_dir(config.output_dir, "generation output folder")
    with OutputLock(out, "generation"):
        return _generate(config, backbone, subjects, phrases, prompt, boxes, layout_name, out)


def warn_unnamed_subjects(template: str, prompt: str, subjects: list) -> None:
    """Every subject enters the init; say so when the prompt does not name some of them."""
    if not template.strip():
        return
    unnamed = [s.name for k, s in enumerate(subjects)
               if f"[V{k + 1}]" not in template and s.phrase.lower() not in prompt.lower()]
    if unnamed:
        log.warning("warning: the prompt does not name %s, but the init composes every subject given; drop them "
                    "from --subjects or name them with [V1], [V2] ...", ", ".join(unnamed))


def _generate(config: GenerateConfig, backbone: Backbone | None, subjects: list, phrases: list[str], prompt: str,
              boxes: Any, layout_name: str, out: Path) -> list[GeneratedImage]:
    if backbone is None:
        config, device, dtype = place_config(config)
        log.info("mudi generate: %s", describe(device, dtype))
        backbone = registry.load_backbone(config.backbone, config.pretrained_model_name_or_path, device, dtype)
    if config.vae:
        backbone.pipeline.vae = load_vae(config.vae, device=backbone.device, dtype=backbone.dtype)
    with loras_applied(backbone, config.lora, config.lora_weights) as adapters:  # a caller's model: left as given
        return _generate_with(config, backbone, adapters, subjects, phrases, prompt, boxes, layout_name, out)


def _generate_with(config: GenerateConfig, backbone: Backbone, adapters: list[str], subjects: list,
                   phrases: list[str], prompt: str, boxes: Any, layout_name: str, out: Path) -> list[GeneratedImage]:
    segmix = config.segmix.resolve(backbone.segmix_preset)
    gamma = config.gamma if config.gamma is not None else (default_gamma(len(subjects)) if subjects else 0.0)
    steps = config.num_inference_steps or backbone.default_num_inference_steps
    guidance = config.guidance_scale if config.guidance_scale is not None else backbone.default_guidance_scale
    seeds = [config.seed + k for k in range(config.num_images)]
    how = f"init {config.init}, gamma {gamma}, layout {layout_name}" if config.init != "none" else "plain pipeline"
    if config.region_control:
        how += f", region control ({config.region_prompt!r} in the layout's boxes)"
    log.info("generating %d image(s) of %r with %s (%s)", len(seeds), prompt, config.backbone, how)
    versions = package_versions()
    lora_info = [{"path": p, "weight": w, "adapter_name": n} for p, w, n in
                 zip(config.lora, config.lora_weights or [1.0] * len(config.lora), adapters)]
    done = {k: _read_existing(out, k, s) for k, s in enumerate(seeds)} if config.skip_existing else {}
    done = {k: v for k, v in done.items() if v is not None}
    todo = [k for k in range(len(seeds)) if k not in done]
    if done:
        log.info("%d image(s) already in %s: kept (skip_existing)", len(done), out)
    made: dict[int, GeneratedImage] = {}
    starts = range(0, len(todo), config.batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=len(starts) < 2):
        ks = todo[start:start + config.batch_size]
        batch = generate_images(backbone, prompt, [seeds[k] for k in ks], subjects, gamma, config.init, boxes,
                                config.relative_sizes, segmix, config.negative_prompt, steps, guidance,
                                config.height, config.width, config.batch_size, layout_name, progress=False,
                                region_control=config.region_control, region_prompt=config.region_prompt)
        for k, r in zip(ks, batch):  # written as soon as they exist: a crash loses one batch
            _write_image(out, k, r, config, subjects, phrases, steps, guidance, lora_info, versions)
            made[k] = r
    results = [made[k] if k in made else done[k][0] for k in range(len(seeds))]
    inits = [made[k].composition.image if k in made and made[k].composition else done[k][1] if k in done else None
             for k in range(len(seeds))]
    save_image_atomic(out / "grid" / "grid.png", image_grid([r.image for r in results], inits))
    save_config(config, out / CONFIG_FILE)
    return results


def _read_existing(out: Path, k: int, seed: int) -> tuple[GeneratedImage, Any] | None:
    """An image a previous run wrote (image and sidecar both there and readable), with its init composition."""
    stem = f"{k:04d}_seed{seed}"
    img, meta = out / f"{stem}.png", out / f"{stem}.json"
    if not (img.is_file() and meta.is_file()):
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        rgb = read_image(img)[0]
    except (json.JSONDecodeError, MudiError):
        return None
    init_path = out / "init" / f"{stem}.png"
    init = read_image(init_path)[0] if init_path.is_file() else None
    return GeneratedImage(rgb, data.get("prompt", ""), seed, data.get("init", "none"), float(data.get("gamma", 0.0)),
                          None, data.get("layout", "none"), data.get("boxes_normalized"),
                          list(data.get("source_images", []))), init


def _write_image(out: Path, k: int, r: GeneratedImage, config: GenerateConfig, subjects: list, phrases: list[str],
                 steps: int, guidance: float | None, lora_info: list, versions: dict) -> None:
    """``NNNN_seedS.png``, its sidecar ``.json`` and, with an init, ``init/NNNN_seedS{,_mask}.png``."""
    stem = f"{k:04d}_seed{r.seed}"
    meta = sidecar(r, f"{stem}.png", negative_prompt=config.negative_prompt,
                   subjects=[s.name for s in subjects], phrases=phrases, num_inference_steps=steps,
                   guidance_scale=guidance, height=int(r.image.shape[0]), width=int(r.image.shape[1]),
                   backbone=config.backbone, pretrained_model_name_or_path=config.pretrained_model_name_or_path,
                   lora=lora_info, versions=versions)
    if r.composition is not None:
        save_image_atomic(out / "init" / f"{stem}.png", r.composition.image)
        save_image_atomic(out / "init" / f"{stem}_mask.png", label_map(r.composition.masks))
        meta.update(boxes_xyxy=[list(b) for b in r.composition.boxes_xyxy], boxes_normalized=r.boxes_normalized,
                    relative_sizes=config.relative_sizes, source_images=r.source_images,
                    init_image=f"init/{stem}.png", init_mask=f"init/{stem}_mask.png")
    write_generated(out / f"{stem}.png", r.image, out / f"{stem}.json", meta)
