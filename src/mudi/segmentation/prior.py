"""``mudi prior`` as a library call: prior (class) images for prior preservation, segmented and filtered (paper Appendix A.1).

For each class, K images are generated with the *base* model from "A photo of <class>, simple background,
full body shot."; each is detected and segmented, and only those with exactly one detection and one mask
component are kept ("we select images that contain a single subject and also result in a single
segmentation mask"). The output is the authors' prior-set layout, which ``mudi.data.subjects`` loads and
the trainer can Seg-Mix::

    OUTPUT_DIR/class_metadata.jsonl   {"id": {"a": "corgi", "b": "harry potter toy"}} then one line per image
    OUTPUT_DIR/a00.png mask_a00.png …
    OUTPUT_DIR/prior_progress.json    every generated index and why it was kept or rejected (resume state)

Image ``i`` of a class is drawn from ``torch.Generator(device).manual_seed(seed + i)``, so a re-run skips
every index already recorded and an interrupted run resumes where it stopped with the same images.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mudi.adapters import registry
from mudi.adapters.mask_cleanup import count_components, fill_holes
from mudi.config import save_config
from mudi.core.prompts import prior_prompt
from mudi.data.subjects import load_subjects, write_prior_metadata
from mudi.devices import check_dtype_name, describe, place_config
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, save_image_atomic, write_json_atomic
from mudi.segmentation.config import parse_backend
from mudi.segmentation.detect import class_queries, detect_and_segment, load_models

PROGRESS_FILE = "prior_progress.json"
CONFIG_FILE = "prior_config.yaml"
log = logging.getLogger(__name__)


@dataclass
class PriorConfig:
    output_dir: str = field(default="", metadata={"help": "the prior folder to write (created; resumable)"})
    classes: list[str] = field(default_factory=list, metadata={
        "help": "class names, e.g. corgi,'harry potter toy' (the descriptive classes of your subjects)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders whose (descriptive) classes to use, instead of or besides --classes"})
    num_images: int = field(default=50, metadata={"help": "K: images generated per class (the paper uses 50)"})
    backbone: str = field(default="sdxl", metadata={"help": "base model: sd15 | sd2 | sdxl | flux | tiny-*"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "base model checkpoint (hub id or local folder); default: the backbone's"})
    num_inference_steps: int = field(default=30, metadata={"help": "sampler steps per image"})
    guidance_scale: float | None = field(default=None, metadata={"help": "classifier-free guidance; default: "
                                                                          "the pipeline's"})
    resolution: int | None = field(default=None, metadata={"help": "image side; default: the backbone's"})
    seed: int = field(default=0, metadata={"help": "image i of every class uses seed + i"})
    generation_batch_size: int = field(default=4, metadata={"help": "images per pipeline call"})
    backend: str = field(default="owlv2+sam", metadata={"help": "DETECTOR+SEGMENTER, as for `mudi segment`"})
    detector_model: str | None = field(default=None, metadata={"help": "detector checkpoint"})
    segmenter_model: str | None = field(default=None, metadata={"help": "segmenter checkpoint"})
    threshold: float = field(default=0.1, metadata={"help": "detection score threshold"})
    min_mask_fraction: float = field(default=0.01, metadata={"help": "reject masks smaller than this"})
    device: str = field(default="auto", metadata={"help": "torch device: auto (CUDA, then MPS, then CPU), cpu, ..."})
    dtype: str = field(default="auto", metadata={
        "help": "auto (bfloat16/float16 on a GPU, float32 on the CPU), float32, float16 or bfloat16"})

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise MudiError("prior needs an output folder: pass --output_dir DIR")
        if self.num_images < 1:
            raise MudiError(f"num_images must be >= 1, got {self.num_images}")
        if self.num_inference_steps < 1 or self.generation_batch_size < 1:
            raise MudiError("num_inference_steps and generation_batch_size must be >= 1")
        check_dtype_name(self.dtype)
        parse_backend(self.backend)


def resolve_classes(config: PriorConfig) -> list[str]:
    """The classes to generate: ``config.classes`` then each subject's class name, without repeats."""
    names = [c.strip() for c in config.classes if c.strip()]
    if config.subjects:
        names += [s.class_name for s in load_subjects(config.subjects)]
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    if not out:
        raise MudiError("no classes given: pass --classes corgi,'harry potter toy' or --subjects FOLDER ...")
    return out


def judge_prior(detections: list[Any] | None, mask: np.ndarray | None, min_mask_fraction: float) -> str:
    """``"kept"`` or the reason for rejecting one generated image (Appendix A.1's single-subject filter)."""
    if detections is not None and len(detections) != 1:
        return f"{len(detections)} detections"
    if mask is None or not mask.any():
        return "empty mask"
    if mask.mean() < min_mask_fraction:
        return f"mask covers {mask.mean():.2%} of the image"
    n = count_components(mask, min_area_fraction=0.01)
    if n != 1:
        return f"{n} mask components"
    return "kept"


def _load_progress(path: Path) -> dict:
    if not path.is_file():
        return {"classes": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise MudiError(f"{path}: not valid JSON; delete it to start this prior folder over") from None
    if not isinstance(data.get("classes"), dict):
        raise MudiError(f"{path}: not a mudi prior progress file; delete it or choose another --output_dir")
    return data


def _write_metadata(out: Path, progress: dict) -> None:
    ids, rows = {}, []
    for name, entry in progress["classes"].items():
        kept = sorted((int(i), r) for i, r in entry["images"].items() if r["status"] == "kept")
        if not kept:
            continue
        ids[entry["letter"]] = name
        for _, r in kept:
            rows.append({"id": entry["letter"], "file_name": r["file_name"], "mask_path": r["mask_path"],
                         "text": prior_prompt(name)})
    if ids:
        write_prior_metadata(out, ids, rows)


def make_prior_set(config: PriorConfig, detector: Any = None, segmenter: Any = None, backbone: Any = None) -> dict:
    """Generate, segment and filter; returns ``{class: {"kept": n, "rejected": n}}``. Models may be injected."""
    classes = resolve_classes(config)
    out = prepare_output_dir(config.output_dir, "prior folder")
    with OutputLock(out, "prior generation"):
        return _make(config, classes, out, detector, segmenter, backbone)


def _make(config: PriorConfig, classes: list[str], out: Path, detector: Any, segmenter: Any,
          backbone: Any) -> dict:
    progress = _load_progress(out / PROGRESS_FILE)
    used = {e["letter"] for e in progress["classes"].values()}
    for name in classes:
        if name not in progress["classes"]:
            free = [c for c in string.ascii_lowercase if c not in used]
            if not free:
                raise MudiError(f"{out}: a prior folder holds at most 26 classes; use another --output_dir")
            progress["classes"][name] = {"letter": free[0], "images": {}}
            used.add(free[0])
    todo = [(name, i) for name in classes for i in range(config.num_images)
            if str(i) not in progress["classes"][name]["images"]]
    config, device, dtype = place_config(config)
    save_config(config, out / CONFIG_FILE)
    if todo:
        log.info("mudi prior: %s", describe(device, dtype))
        if backbone is None:
            backbone = registry.load_backbone(config.backbone, config.pretrained_model_name_or_path, device, dtype)
        if segmenter is None:  # the raw mask must show its components: no clean-up
            detector, segmenter = load_models(config.backend, config.detector_model, config.segmenter_model,
                                              device, dtype, use_cleanup=False)
        pipe = backbone.pipeline
        pipe.set_progress_bar_config(disable=True)
        side = config.resolution or backbone.default_resolution
        gen_device = backbone.device
    with tqdm(total=len(todo), desc="prior", unit="img", disable=None) as bar:
        for start in range(0, len(todo), config.generation_batch_size):
            chunk = todo[start:start + config.generation_batch_size]
            by_class: dict[str, list[int]] = {}
            for name, i in chunk:
                by_class.setdefault(name, []).append(i)
            for name, indices in by_class.items():
                entry = progress["classes"][name]
                kwargs = {"num_inference_steps": config.num_inference_steps, "height": side, "width": side,
                          "output_type": "np"}
                if config.guidance_scale is not None:
                    kwargs["guidance_scale"] = config.guidance_scale
                generators = [torch.Generator(gen_device).manual_seed(config.seed + i) for i in indices]
                with torch.no_grad():
                    images = pipe(prompt=[prior_prompt(name)] * len(indices), generator=generators, **kwargs).images
                images = [(np.clip(np.asarray(im, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
                          for im in images]
                found = detect_and_segment(images, class_queries(name), detector, segmenter, config.threshold,
                                           single_only=True)
                for k, i in enumerate(indices):
                    mask = found[k].mask
                    status = judge_prior(found[k].detections, mask, config.min_mask_fraction)
                    record: dict = {"status": "kept" if status == "kept" else "rejected", "seed": config.seed + i}
                    if status == "kept":
                        stem = f"{entry['letter']}{i:02d}"
                        save_image_atomic(out / f"{stem}.png", images[k])
                        save_image_atomic(out / f"mask_{stem}.png", fill_holes(mask))
                        record.update(file_name=f"{stem}.png", mask_path=f"mask_{stem}.png")
                    else:
                        record["reason"] = status
                    entry["images"][str(i)] = record
                bar.update(len(indices))
            _write_metadata(out, progress)
            write_json_atomic(out / PROGRESS_FILE, progress)
    write_json_atomic(out / PROGRESS_FILE, progress)
    summary = {}
    for name in classes:
        recs = progress["classes"][name]["images"].values()
        kept = sum(r["status"] == "kept" for r in recs)
        summary[name] = {"letter": progress["classes"][name]["letter"], "kept": kept, "rejected": len(recs) - kept}
    return summary
