"""``mudi segmix`` as a library call: write Seg-Mix (or Cut-Mix) compositions of subject sets for a person to
review (and the demo, the UI).

Outputs in ``--output_dir``: ``NNN.png`` composites; ``NNN_mask.png`` label maps (0 = background, k = the k-th
subject of the prompt, visible pixels after occlusion); ``segmix.jsonl`` (one object per composite: image,
mask, prompt, subjects, phrases, boxes_xyxy, source_images, left_to_right, stacking); ``grid.png`` contact
sheet with boxes drawn; ``segmix_config.yaml`` (the resolved config).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from mudi.config import save_config
from mudi.core.segmix import SegMixParams, SegMixSettings, compose_cutmix, compose_segmix, cutout_max_side
from mudi.core.types import Composition
from mudi.data.subjects import Subject, load_subjects
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, save_image_atomic, write_jsonl_atomic
from mudi.visualize import contact_sheet, draw_boxes, label_map

CONFIG_FILE = "segmix_config.yaml"
log = logging.getLogger(__name__)


@dataclass
class SegmixConfig:
    subjects: list[str] = field(default_factory=list, metadata={"help": "subject folders or benchmark pair folders"})
    output_dir: str = field(default="segmix_out", metadata={"help": "output folder", "flags": ["--out"]})
    num_images: int = field(default=16, metadata={"help": "number of compositions", "flags": ["--num"]})
    resolution: int = field(default=1024, metadata={"help": "square canvas size in pixels", "flags": ["--size"]})
    seed: int = field(default=0, metadata={"help": "random seed (composition i uses seed sequence [seed, i])"})
    num_subjects: int | None = field(default=None, metadata={"help": "subjects per composition (default: min(2, given))"})
    relative_sizes: list[float] | None = field(default=None, metadata={"help": "height ratio per given subject"})
    mode: Literal["segmix", "cutmix"] = field(default="segmix", metadata={"help": "composition mode"})
    segmix: SegMixSettings = field(default_factory=SegMixSettings, metadata={
        "help": "Seg-Mix geometry: a preset (auto = sdxl, the authors' code; flux; legacy) and any field to change"})

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise MudiError(f"--num_images {self.num_images}: give at least 1")
        if self.resolution < 16:
            raise MudiError(f"--resolution {self.resolution} is too small for compositions: use e.g. 512 or 1024")
        if self.num_subjects is not None and self.num_subjects < 1:
            raise MudiError(f"--num-subjects {self.num_subjects}: give at least 1")


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
            params = dataclasses.replace(params, relative_sizes=tuple(relative_sizes[i] for i in chosen))
        side = cutout_max_side((size, size), params)
        cutouts = [subjects[i].cutouts(max_side=side)[j] for i, j in zip(chosen, picks)]
        comp = compose_segmix(cutouts, phrases, (size, size), rng, params)
    return comp, chosen, picks


def write_compositions(cfg: SegmixConfig) -> list[dict]:
    subjects = load_subjects(cfg.subjects)
    k = cfg.num_subjects if cfg.num_subjects is not None else min(2, len(subjects))
    if k > len(subjects):
        raise MudiError(f"--num-subjects {k} is larger than the {len(subjects)} subject(s) given "
                        f"({', '.join(s.name for s in subjects)}): pass more --subjects or lower it")
    if cfg.relative_sizes is not None and len(cfg.relative_sizes) != len(subjects):
        raise MudiError(f"--relative-sizes has {len(cfg.relative_sizes)} value(s) for {len(subjects)} subjects "
                        f"({', '.join(s.name for s in subjects)}): give one per subject, e.g. "
                        f"{','.join(['1'] * len(subjects))}")
    params = cfg.segmix.resolve("sdxl")  # no backbone here: auto is the authors' SDXL geometry
    # Decode, validate and crop every reference image before writing anything.
    if cfg.mode == "segmix":
        for s in subjects:
            s.cutouts(max_side=cutout_max_side((cfg.resolution, cfg.resolution), params))
    else:
        for s in subjects:
            s.full_images(max_side=cfg.resolution)
    # Try one composition so size problems surface before any output exists.
    compose_one(subjects, k, cfg.resolution, composition_rng(cfg.seed, 0), params, cfg.mode, cfg.relative_sizes)

    out = prepare_output_dir(cfg.output_dir, "Seg-Mix output folder")
    with OutputLock(out, "segmix"):
        return _write(cfg, subjects, k, params, out)


def _write(cfg: SegmixConfig, subjects: list[Subject], k: int, params: SegMixParams, out: Path) -> list[dict]:
    rows, tiles, captions = [], [], []
    for i in tqdm(range(cfg.num_images), desc="segmix", unit="img"):
        comp, chosen, picks = compose_one(subjects, k, cfg.resolution, composition_rng(cfg.seed, i), params, cfg.mode,
                                          cfg.relative_sizes)
        name = f"{i:03d}.png"
        save_image_atomic(out / name, comp.image)
        save_image_atomic(out / f"{i:03d}_mask.png", label_map(comp.masks))
        rows.append({
            "image": name, "mask": f"{i:03d}_mask.png", "prompt": comp.prompt,
            "subjects": [subjects[c].name for c in chosen], "phrases": [subjects[c].phrase for c in chosen],
            "boxes_xyxy": [list(b) for b in comp.boxes_xyxy],
            "source_images": [str(subjects[c].images[p].path) for c, p in zip(chosen, picks)],
            "left_to_right": comp.left_to_right, "stacking": comp.stacking, "seed": [cfg.seed, i], "mode": cfg.mode,
        })
        tiles.append(draw_boxes(Image.fromarray(comp.image), comp.boxes_xyxy,
                                [subjects[c].name for c in chosen], width=max(2, cfg.resolution // 200)))
        captions.append(comp.prompt)
    write_jsonl_atomic(out / "segmix.jsonl", rows)
    save_image_atomic(out / "grid.png", contact_sheet(tiles, captions))
    save_config(cfg, out / CONFIG_FILE)
    log.info("wrote %d compositions, segmix.jsonl and grid.png to %s", cfg.num_images, out)
    return rows
