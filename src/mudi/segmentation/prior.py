"""``mudi prior`` as a library call: prior (class) images for prior preservation, segmented and filtered
(paper Appendix A.1; the authors' generate_prior.py).

For each class, K = 50 images are made with the *base* model as the authors made theirs: prompt "a photo of a
<class>, simple background, full body view, award winning photography, highly detailed" with their negative
prompt; OWLv2 at 0.4 with the class as its one query; an image is drawn again (up to 10 tries) until exactly one
box is found, which SAM then segments ("we select images that contain a single subject and also result in a
single segmentation mask"). Each kept image is captioned "A photo of a <class>", the caption a training step
sees with a single prior image. mudi's stricter filters (one mask component, a minimum mask size, hole filling,
the class's last word as a second query, NMS) are options, off by default. The output is the authors' prior-set
layout, which ``mudi.data.subjects`` loads and the trainer can Seg-Mix::

    OUTPUT_DIR/class_metadata.jsonl   {"id": {"a": "corgi", "b": "harry potter toy"}} then one line per image
    OUTPUT_DIR/a00.png mask_a00.png …
    OUTPUT_DIR/prior_progress.json    every finished index: kept (after how many tries) or why not (resume state)

Image ``i`` of a class draws all its tries from one ``torch.Generator(device).manual_seed(seed + i)``, so it
does not depend on the batch, a re-run skips every index already recorded, and an interrupted run resumes with
the same images.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mudi.adapters import registry
from mudi.adapters.mask_cleanup import count_components, fill_holes
from mudi.config import save_config
from mudi.core.prompts import PRIOR_CAPTION, PRIOR_NEGATIVE_PROMPT, PRIOR_PROMPT, prior_caption, prior_prompt
from mudi.data.subjects import load_subjects, write_prior_metadata
from mudi.devices import check_dtype_name, describe, place_config
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, save_image_atomic, write_json_atomic
from mudi.segmentation.config import parse_backend
from mudi.segmentation.detect import class_queries, detect_and_segment, load_models

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

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
    backbone: str = field(default="sdxl", metadata={"help": f"base model: {registry.backbone_choices()}"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "base model checkpoint (hub id or local folder); default: the backbone's"})
    prompt: str = field(default=PRIOR_PROMPT, metadata={
        "help": "generation prompt, {} the class (the authors' generate_prior.py; mudi 0.x: 'A photo of {}, simple "
                "background, full body shot.')"})
    negative_prompt: str = field(default=PRIOR_NEGATIVE_PROMPT, metadata={
        "help": "negative prompt (the authors'); ignored by backbones without one (FLUX); empty for none"})
    caption: str = field(default=PRIOR_CAPTION, metadata={
        "help": "caption of each kept image in class_metadata.jsonl, {} the class: what a training step sees "
                "(the authors': 'A photo of a {}'); empty: the generation prompt (mudi 0.x)"})
    num_inference_steps: int | None = field(default=None, metadata={
        "help": "sampler steps per image (default: the backbone's, the pipeline's own: 50 for SD/SDXL)"})
    guidance_scale: float | None = field(default=None, metadata={"help": "classifier-free guidance; default: "
                                                                          "the pipeline's"})
    resolution: int | None = field(default=None, metadata={"help": "image side; default: the backbone's"})
    seed: int = field(default=0, metadata={"help": "image i of every class draws its tries from seed + i"})
    generation_batch_size: int = field(default=4, metadata={"help": "images per pipeline call"})
    max_tries: int = field(default=10, metadata={
        "help": "generations per image until exactly one subject is detected (the authors': 10); after that the "
                "index is recorded as rejected"})
    backend: str = field(default="owlv2+sam", metadata={"help": "DETECTOR+SEGMENTER, as for `mudi segment`"})
    detector_model: str | None = field(default=None, metadata={"help": "detector checkpoint"})
    segmenter_model: str | None = field(default=None, metadata={"help": "segmenter checkpoint"})
    threshold: float = field(default=0.4, metadata={"help": "detection score threshold (the authors': 0.4)"})
    nms_iou: float | None = field(default=None, metadata={
        "help": "merge the detector's overlapping boxes above this IoU before counting (the authors: none)"})
    use_class_noun_query: bool = field(default=False, metadata={
        "help": "also query the class's last word ('toy' for 'harry potter toy'; mudi 0.x); the authors query "
                "the class alone"})
    use_single_component: bool = field(default=False, metadata={
        "help": "also reject masks of more than one component (mudi 0.x); the authors keep SAM's mask"})
    min_mask_fraction: float = field(default=0.0, metadata={
        "help": "also reject masks smaller than this fraction of the image (mudi 0.x: 0.01); 0: only empty ones"})
    use_fill_holes: bool = field(default=False, metadata={
        "help": "fill the holes of kept masks (mudi 0.x); the authors save SAM's mask as it is"})
    device: str = field(default="auto", metadata={"help": "torch device: auto (CUDA, then MPS, then CPU), cpu, ..."})
    dtype: str = field(default="auto", metadata={
        "help": "auto (bfloat16/float16 on a GPU, float32 on the CPU), float32, float16 or bfloat16"})

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise MudiError("prior needs an output folder: pass --output_dir DIR")
        if self.num_images < 1:
            raise MudiError(f"num_images must be >= 1, got {self.num_images}")
        if (self.num_inference_steps is not None and self.num_inference_steps < 1) or self.generation_batch_size < 1:
            raise MudiError("num_inference_steps and generation_batch_size must be >= 1")
        if self.max_tries < 1:
            raise MudiError(f"max_tries must be >= 1, got {self.max_tries}")
        if not 0.0 <= self.threshold <= 1.0:
            raise MudiError(f"threshold {self.threshold} must be between 0 and 1 (the authors use 0.4)")
        if self.nms_iou is not None and not 0.0 < self.nms_iou <= 1.0:
            raise MudiError(f"nms_iou {self.nms_iou} must be in (0, 1], or unset for no NMS")
        if "{}" not in self.prompt or (self.caption and "{}" not in self.caption):
            raise MudiError("prompt and caption need '{}' where the class goes, e.g. 'a photo of a {}'")
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


def judge_prior(detections: list[Any] | None, mask: np.ndarray | None, min_mask_fraction: float = 0.0,
                use_single_component: bool = False) -> str:
    """``"kept"`` or the reason for rejecting one generated image: exactly one detection and a non-empty mask
    (the authors' filter); ``min_mask_fraction`` and ``use_single_component`` add mudi 0.x's stricter checks."""
    if detections is not None and len(detections) != 1:
        return f"{len(detections)} detections"
    if mask is None or not mask.any():
        return "empty mask"
    if mask.mean() < min_mask_fraction:
        return f"mask covers {mask.mean():.2%} of the image"
    if use_single_component:
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


def _write_metadata(out: Path, progress: dict, config: PriorConfig) -> None:
    ids, rows = {}, []
    for name, entry in progress["classes"].items():
        kept = sorted((int(i), r) for i, r in entry["images"].items() if r["status"] == "kept")
        if not kept:
            continue
        ids[entry["letter"]] = name
        text = prior_caption(name, config.caption) if config.caption else prior_prompt(name, config.prompt)
        for _, r in kept:
            rows.append({"id": entry["letter"], "file_name": r["file_name"], "mask_path": r["mask_path"],
                         "text": text})
    if ids:
        write_prior_metadata(out, ids, rows)


@dataclass
class _Pending:
    """One prior image still being drawn: its class, index, generator and tries so far."""

    name: str
    index: int
    generator: Any
    tries: int = 0


def _generate(config: PriorConfig, backbone: Backbone, name: str, generators: list[Any]) -> list[np.ndarray]:
    """One pipeline call: an ``(H, W, 3)`` uint8 image of class ``name`` per generator."""
    side = config.resolution or backbone.default_resolution
    kwargs: dict = {"num_inference_steps": config.num_inference_steps or backbone.default_num_inference_steps,
                    "height": side, "width": side, "output_type": "np"}
    if config.guidance_scale is not None:
        kwargs["guidance_scale"] = config.guidance_scale
    if config.negative_prompt and backbone.supports_negative_prompt:
        kwargs["negative_prompt"] = [config.negative_prompt] * len(generators)
    with torch.no_grad():
        images = backbone.pipeline(prompt=[prior_prompt(name, config.prompt)] * len(generators),
                                   generator=generators, **kwargs).images
    return [(np.clip(np.asarray(im, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8) for im in images]


def _finish(out: Path, config: PriorConfig, progress: dict, p: _Pending, image: np.ndarray,
            mask: np.ndarray | None, status: str) -> dict:
    """Write a kept image and its mask; the progress record of image ``p`` either way."""
    record: dict = {"status": "kept" if status == "kept" else "rejected", "seed": config.seed + p.index,
                    "tries": p.tries}
    if status != "kept":
        record["reason"] = f"{p.tries} tries, the last: {status}" if p.tries > 1 else status
        return record
    stem = f"{progress['classes'][p.name]['letter']}{p.index:02d}"
    save_image_atomic(out / f"{stem}.png", image)
    save_image_atomic(out / f"mask_{stem}.png", fill_holes(mask) if config.use_fill_holes else mask)
    record.update(file_name=f"{stem}.png", mask_path=f"mask_{stem}.png")
    return record


def make_prior_set(config: PriorConfig, detector: Any = None, segmenter: Any = None, backbone: Backbone | None = None) -> dict:
    """Generate, segment and filter; returns ``{class: {"kept": n, "rejected": n}}``. Models may be injected."""
    classes = resolve_classes(config)
    out = prepare_output_dir(config.output_dir, "prior folder")
    with OutputLock(out, "prior generation"):
        return _make(config, classes, out, detector, segmenter, backbone)


def _make(config: PriorConfig, classes: list[str], out: Path, detector: Any, segmenter: Any,
          backbone: Backbone) -> dict:
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
                                              device, dtype, use_cleanup=False,
                                              detector_kwargs={"nms_iou": config.nms_iou})
        backbone.pipeline.set_progress_bar_config(disable=True)
    # every image's tries come from its own generator: the same images whatever the batch or the resumption
    pending = [_Pending(name, i, torch.Generator(backbone.device).manual_seed(config.seed + i)) for name, i in todo]
    with tqdm(total=len(todo), desc="prior", unit="img", disable=None) as bar:
        while pending:
            chunk, pending = pending[:config.generation_batch_size], pending[config.generation_batch_size:]
            for name in dict.fromkeys(p.name for p in chunk):
                group = [p for p in chunk if p.name == name]
                images = _generate(config, backbone, name, [p.generator for p in group])
                queries = class_queries(name) if config.use_class_noun_query else [name]
                found = detect_and_segment(images, queries, detector, segmenter, config.threshold, single_only=True)
                for p, image, f in zip(group, images, found):
                    p.tries += 1
                    status = judge_prior(f.detections, f.mask, config.min_mask_fraction, config.use_single_component)
                    if status != "kept" and p.tries < config.max_tries:
                        pending.append(p)  # the authors' retry: draw this image again
                        continue
                    progress["classes"][name]["images"][str(p.index)] = _finish(out, config, progress, p, image,
                                                                                f.mask, status)
                    bar.update(1)
            _write_metadata(out, progress, config)
            write_json_atomic(out / PROGRESS_FILE, progress)
    write_json_atomic(out / PROGRESS_FILE, progress)
    summary = {}
    for name in classes:
        recs = progress["classes"][name]["images"].values()
        kept = sum(r["status"] == "kept" for r in recs)
        summary[name] = {"letter": progress["classes"][name]["letter"], "kept": kept, "rejected": len(recs) - kept}
    return summary
