"""``mudi segmix``: write Seg-Mix (or Cut-Mix) compositions of subject sets for a person to review.

Outputs in ``--out``: ``NNN.png`` composites; ``NNN_mask.png`` label maps (0 = background, k = the k-th
subject of the prompt, visible pixels after occlusion); ``segmix.jsonl`` (one object per composite: image,
mask, prompt, subjects, phrases, boxes_xyxy, source_images, left_to_right, stacking); ``grid.png`` contact
sheet with boxes drawn; ``segmix_config.yaml`` (the resolved config).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mudi.config import load_config, save_config
from mudi.core.segmix import SegMixParams, compose_cutmix, compose_segmix, cutout_max_side
from mudi.core.types import Composition
from mudi.data.subjects import Subject, load_subjects
from mudi.errors import MudiError
from mudi.io import save_image_atomic, write_jsonl_atomic
from mudi.visualize import contact_sheet, draw_boxes

HELP = "compose subjects into Seg-Mix (or Cut-Mix) training images and write a contact sheet"
log = logging.getLogger(__name__)


@dataclass
class SegmixConfig:
    subjects: list[str] = field(default_factory=list, metadata={"help": "subject folders or benchmark pair folders"})
    out: str = field(default="segmix_out", metadata={"help": "output folder"})
    num: int = field(default=16, metadata={"help": "number of compositions"})
    size: int = field(default=1024, metadata={"help": "square canvas size in pixels"})
    seed: int = field(default=0, metadata={"help": "random seed (composition i uses seed sequence [seed, i])"})
    num_subjects: int | None = field(default=None, metadata={"help": "subjects per composition (default: min(2, given))"})
    relative_sizes: list[float] | None = field(default=None, metadata={"help": "height ratio per given subject"})
    background: tuple[int, int, int] = field(default=(255, 255, 255), metadata={"help": "background RGB"})
    scale_range: tuple[float, float] = field(default=(0.4, 0.8), metadata={"help": "subject height / canvas"})
    max_margin_frac: float = field(default=0.3, metadata={"help": "largest inward margin / canvas width"})
    allow_overlap: bool = field(default=True, metadata={"help": "let subjects overlap (Appendix B.2)"})
    mode: Literal["segmix", "cutmix"] = field(default="segmix", metadata={"help": "composition mode"})
    use_count_prefix: bool = field(default=False, metadata={"help": "prefix prompts with 'N objects: '"})

    def __post_init__(self) -> None:
        if self.num < 1:
            raise MudiError(f"--num {self.num}: give at least 1")
        if self.size < 16:
            raise MudiError(f"--size {self.size} is too small for compositions: use e.g. 512 or 1024")
        if self.num_subjects is not None and self.num_subjects < 1:
            raise MudiError(f"--num-subjects {self.num_subjects}: give at least 1")

    def params(self) -> SegMixParams:
        return SegMixParams(scale_range=tuple(self.scale_range), max_margin_frac=self.max_margin_frac,
                            allow_overlap=self.allow_overlap, background=tuple(self.background),
                            use_count_prefix=self.use_count_prefix)


@dataclass
class ComposedSample:
    composition: Composition
    subjects: list[Subject]
    source_images: list[str]
    seed: list[int]


def composition_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for composition ``index`` of a run seeded with ``seed`` (independent of the others)."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def compose_one(subjects: list[Subject], k: int, size: int, rng: np.random.Generator, params: SegMixParams,
                mode: str = "segmix", relative_sizes: list[float] | None = None) -> tuple[Composition, list[int], list[int]]:
    """Pick ``k`` of ``subjects`` (random prompt order) and one reference image of each; compose them.

    Returns the composition, the chosen subject indices (prompt order) and the chosen image indices.
    """
    chosen = [int(i) for i in rng.choice(len(subjects), size=k, replace=False)]
    picks = [int(rng.integers(len(subjects[i].images))) for i in chosen]
    phrases = [subjects[i].phrase for i in chosen]
    if mode == "cutmix":
        images = [subjects[i].full_images(max_side=size)[j] for i, j in zip(chosen, picks)]
        comp = compose_cutmix(images, phrases, (size, size), rng)
    else:
        if relative_sizes is not None:
            params = SegMixParams(**{**params.__dict__, "relative_sizes": tuple(relative_sizes[i] for i in chosen)})
        side = cutout_max_side((size, size), params)
        cutouts = [subjects[i].cutouts(max_side=side)[j] for i, j in zip(chosen, picks)]
        comp = compose_segmix(cutouts, phrases, (size, size), rng, params)
    return comp, chosen, picks


def run(cfg: SegmixConfig) -> list[dict]:
    subjects = load_subjects(cfg.subjects)
    k = cfg.num_subjects if cfg.num_subjects is not None else min(2, len(subjects))
    if k > len(subjects):
        raise MudiError(f"--num-subjects {k} is larger than the {len(subjects)} subject(s) given "
                        f"({', '.join(s.name for s in subjects)}): pass more --subjects or lower it")
    if cfg.relative_sizes is not None and len(cfg.relative_sizes) != len(subjects):
        raise MudiError(f"--relative-sizes has {len(cfg.relative_sizes)} value(s) for {len(subjects)} subjects "
                        f"({', '.join(s.name for s in subjects)}): give one per subject, e.g. "
                        f"{','.join(['1'] * len(subjects))}")
    params = cfg.params()
    # Decode, validate and crop every reference image before writing anything.
    if cfg.mode == "segmix":
        for s in subjects:
            s.cutouts(max_side=cutout_max_side((cfg.size, cfg.size), params))
    else:
        for s in subjects:
            s.full_images(max_side=cfg.size)
    # Try one composition so size problems surface before any output exists.
    compose_one(subjects, k, cfg.size, composition_rng(cfg.seed, 0), params, cfg.mode, cfg.relative_sizes)

    from tqdm.auto import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, tiles, captions = [], [], []
    for i in tqdm(range(cfg.num), desc="segmix", unit="img"):
        comp, chosen, picks = compose_one(subjects, k, cfg.size, composition_rng(cfg.seed, i), params, cfg.mode,
                                          cfg.relative_sizes)
        name = f"{i:03d}.png"
        label = np.zeros(comp.union_mask.shape, dtype=np.uint8)
        for j in range(len(chosen)):
            label[comp.masks[j]] = j + 1
        save_image_atomic(out / name, comp.image)
        save_image_atomic(out / f"{i:03d}_mask.png", label)
        rows.append({
            "image": name, "mask": f"{i:03d}_mask.png", "prompt": comp.prompt,
            "subjects": [subjects[c].name for c in chosen], "phrases": [subjects[c].phrase for c in chosen],
            "boxes_xyxy": [list(b) for b in comp.boxes_xyxy],
            "source_images": [str(subjects[c].images[p].path) for c, p in zip(chosen, picks)],
            "left_to_right": comp.left_to_right, "stacking": comp.stacking, "seed": [cfg.seed, i], "mode": cfg.mode,
        })
        tiles.append(draw_boxes(Image.fromarray(comp.image), comp.boxes_xyxy,
                                [subjects[c].name for c in chosen], width=max(2, cfg.size // 200)))
        captions.append(comp.prompt)
    write_jsonl_atomic(out / "segmix.jsonl", rows)
    save_image_atomic(out / "grid.png", contact_sheet(tiles, captions))
    save_config(cfg, out / "segmix_config.yaml")
    log.info("wrote %d compositions, segmix.jsonl and grid.png to %s", cfg.num, out)
    return rows


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 1,2") from None


def _rgb(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or any(not 0 <= v <= 255 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r} is not an RGB colour like 255,255,255")
    return vals  # type: ignore[return-value]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with SegmixConfig keys")
    p.add_argument("--subjects", nargs="+", help="subject folders or benchmark pair folders")
    p.add_argument("--num", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out")
    p.add_argument("--num-subjects", dest="num_subjects", type=int)
    p.add_argument("--relative-sizes", dest="relative_sizes", type=_floats, help="e.g. 1,2 (one per subject)")
    p.add_argument("--background", type=_rgb, help="e.g. 255,255,255")
    p.add_argument("--mode", choices=["segmix", "cutmix"])
    p.add_argument("--no-overlap", dest="allow_overlap", action="store_const", const=False)
    p.add_argument("--count-prefix", dest="use_count_prefix", action="store_const", const=True)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. max_margin_frac=0.4")


FLAG_KEYS = ("subjects", "num", "size", "seed", "out", "num_subjects", "relative_sizes", "background", "mode",
             "allow_overlap", "use_count_prefix")


def main(args: argparse.Namespace) -> int:
    values = {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}
    cfg = load_config(SegmixConfig, args.config, args.overrides, values)
    if not cfg.subjects:
        raise MudiError("no subjects given: pass --subjects PATH [PATH ...]")
    rows = run(cfg)
    print(f"wrote {len(rows)} compositions to {cfg.out} (see {Path(cfg.out) / 'grid.png'})")
    return 0
