"""``mudi prior``: prior (class) images for prior preservation, segmented and filtered (paper Appendix A.1).

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

import argparse
import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mudi.errors import MudiError

HELP = "Generate, segment and filter prior (class) images for prior preservation (Appendix A.1)."
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
    device: str = field(default="cpu", metadata={"help": "torch device"})
    dtype: str = field(default="float32", metadata={"help": "float32 | float16 | bfloat16"})

    def __post_init__(self) -> None:
        from mudi.adapters.segment_registry import parse_backend

        if not self.output_dir:
            raise MudiError("prior needs an output folder: pass --output_dir DIR")
        if self.num_images < 1:
            raise MudiError(f"num_images must be >= 1, got {self.num_images}")
        if self.num_inference_steps < 1 or self.generation_batch_size < 1:
            raise MudiError("num_inference_steps and generation_batch_size must be >= 1")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise MudiError(f"dtype {self.dtype!r} is not one of float32, float16, bfloat16")
        parse_backend(self.backend)


def resolve_classes(config: PriorConfig) -> list[str]:
    """The classes to generate: ``config.classes`` then each subject's class name, without repeats."""
    names = [c.strip() for c in config.classes if c.strip()]
    if config.subjects:
        from mudi.data.subjects import load_subjects

        names += [s.class_name for s in load_subjects(config.subjects)]
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    if not out:
        raise MudiError("no classes given: pass --classes corgi,'harry potter toy' or --subjects FOLDER ...")
    return out


def class_queries(class_name: str) -> list[str]:
    """Detector queries: the class name and, for a descriptive class, its last word (the noun)."""
    noun = class_name.split()[-1]
    return [class_name] if noun == class_name else [class_name, noun]


def judge_prior(detections: list[Any] | None, mask: np.ndarray | None, min_mask_fraction: float) -> str:
    """``"kept"`` or the reason for rejecting one generated image (Appendix A.1's single-subject filter)."""
    from mudi.adapters.mask_cleanup import count_components

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
    from mudi.core.prompts import prior_prompt
    from mudi.data.subjects import PRIOR_FILE
    from mudi.io import write_jsonl_atomic

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
        write_jsonl_atomic(out / PRIOR_FILE, [{"id": ids}] + rows)


def run(config: PriorConfig, detector: Any = None, segmenter: Any = None, backbone: Any = None) -> dict:
    """Generate, segment and filter; returns ``{class: {"kept": n, "rejected": n}}``. Models may be injected."""
    import torch
    from tqdm.auto import tqdm

    from mudi.adapters.mask_cleanup import fill_holes
    from mudi.config import save_config
    from mudi.core.prompts import prior_prompt
    from mudi.io import save_image_atomic, write_json_atomic

    classes = resolve_classes(config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    save_config(config, out / CONFIG_FILE)
    if todo:
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.dtype]
        if backbone is None:
            from mudi.adapters.registry import load_backbone

            backbone = load_backbone(config.backbone, config.pretrained_model_name_or_path, config.device, dtype)
        if segmenter is None:
            from mudi.adapters.segment_registry import load_detector, load_segmenter, parse_backend

            det_name, seg_name = parse_backend(config.backend)
            detector = load_detector(det_name, config.detector_model, config.device, config.dtype) if det_name else None
            segmenter = load_segmenter(seg_name, config.segmenter_model, config.device, config.dtype,
                                       use_cleanup=False)  # the raw mask must show its components
        pipe = backbone.pipeline
        pipe.set_progress_bar_config(disable=True)
        side = config.resolution or getattr(backbone, "default_resolution", None) or 512
        gen_device = torch.device(config.device)
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
                if detector is not None:
                    detections = detector.detect(images, [class_queries(name)] * len(images), config.threshold)
                else:
                    detections = [None] * len(images)
                boxes = [d[0].box_xyxy if d else None for d in detections]
                seg_idx = [k for k, d in enumerate(detections) if d is None or len(d) == 1]
                masks = dict(zip(seg_idx, segmenter.segment([images[k] for k in seg_idx],
                                                            [boxes[k] for k in seg_idx]) if seg_idx else []))
                for k, i in enumerate(indices):
                    mask = masks.get(k)
                    mask = None if mask is None else np.asarray(mask, dtype=bool)
                    status = judge_prior(detections[k], mask, config.min_mask_fraction)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir", help="prior folder to write")
    parser.add_argument("--classes", nargs="+", help="class names, e.g. corgi 'harry potter toy'")
    parser.add_argument("--subjects", nargs="+", help="subject folders whose descriptive classes to use")
    parser.add_argument("--num_images", "--num-images", dest="num_images", type=int, help="K per class (50)")
    parser.add_argument("--backbone", help="sd15 | sd2 | sdxl | flux | tiny-sd | tiny-sdxl | tiny-flux")
    parser.add_argument("--pretrained_model_name_or_path", help="base model checkpoint")
    parser.add_argument("--backend", help="DETECTOR+SEGMENTER (owlv2+sam) or SEGMENTER (grabcut)")
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--dtype", help="float32 | float16 | bfloat16")
    parser.add_argument("--seed", type=int, help="image i uses seed + i (default 0)")
    parser.add_argument("--config", help="YAML file with PriorConfig keys")


def main(args: argparse.Namespace) -> int:
    from mudi.config import load_config

    values = {k: v for k, v in {
        "output_dir": args.output_dir, "classes": args.classes, "subjects": args.subjects,
        "num_images": args.num_images, "backbone": args.backbone,
        "pretrained_model_name_or_path": args.pretrained_model_name_or_path, "backend": args.backend,
        "device": args.device, "dtype": args.dtype, "seed": args.seed}.items() if v is not None}
    config = load_config(PriorConfig, args.config, args.overrides, values)
    summary = run(config)
    width = max(len(n) for n in summary)
    print(f"{'class'.ljust(width)}  id  kept  rejected")
    for name, s in summary.items():
        print(f"{name.ljust(width)}  {s['letter']}   {s['kept']:>4}  {s['rejected']:>8}")
    empty = [n for n, s in summary.items() if s["kept"] == 0]
    print(f"prior folder: {config.output_dir}")
    if empty:
        print(f"no image kept for {empty}: raise --num_images, lower --set threshold=..., or check the backend")
        return 1
    return 0
