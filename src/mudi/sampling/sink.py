"""The generation sink of the stage pipelines (the benchmark's cells and study, ``mudi iterate``): jobs in,
images and their sidecars (:mod:`mudi.data.generated`) out, with the LoRAs applied for the call and removed after
(:func:`mudi.sampling.loras.loras_applied`). Jobs already on disk are not made again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from mudi.core.prompts import DEFAULT_REGION_PROMPT
from mudi.data.generated import sidecar, write_generated
from mudi.sampling.images import generate_images
from mudi.sampling.loras import loras_applied

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


@dataclass
class ImageJob:
    """One image to make: where it goes (``image_path``, ``sidecar_path``; ``image`` is the path the sidecar
    records), its prompt and seed, the subjects of its mean-shifted init (None: no init) and the sidecar's own
    fields."""

    image_path: Path
    sidecar_path: Path
    image: str
    prompt: str
    seed: int
    subjects: tuple | None = None
    fields: dict = field(default_factory=dict)


@dataclass
class Sampler:
    """How every job of a call is sampled (``generate_images``' keywords)."""

    init: str = "mean_shifted"
    gamma: float | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 4
    region_control: bool = False
    region_prompt: str = DEFAULT_REGION_PROMPT

    @property
    def uses_subjects(self) -> bool:
        """Whether the subjects enter the call: the mean-shifted init, or region control's boxes."""
        return self.init != "none" or self.region_control


def pending(jobs: Sequence[ImageJob]) -> list[ImageJob]:
    """The jobs whose image is not on disk yet."""
    return [j for j in jobs if not j.image_path.is_file()]


def run_jobs(backbone: Callable[[], Backbone], jobs: Sequence[ImageJob], loras: Sequence[str], sampler: Sampler,
             desc: str = "generate", progress: bool = False) -> int:
    """Make ``jobs`` with ``loras`` applied: jobs with the same subjects share a pipeline call (in the order they
    first appear), ``sampler.batch_size`` at a time; each image and sidecar is written as soon as it exists.
    ``backbone`` returns the model (called only when there is a job). Returns the number of images made."""
    if not jobs:
        return 0
    bb = backbone()
    groups: dict[Any, list[ImageJob]] = {}
    for j in jobs:
        key = tuple(id(s) for s in j.subjects) if j.subjects is not None and sampler.uses_subjects else ()
        groups.setdefault(key, []).append(j)
    bs = sampler.batch_size
    chunks = [g[k:k + bs] for g in groups.values() for k in range(0, len(g), bs)]
    with loras_applied(bb, list(loras)):
        for chunk in tqdm(chunks, desc=desc, unit="batch", disable=not progress):
            subjects = chunk[0].subjects
            made = generate_images(bb, [j.prompt for j in chunk], [j.seed for j in chunk],
                                   subjects=list(subjects) if subjects is not None and sampler.uses_subjects else None,
                                   gamma=sampler.gamma, init=sampler.init, negative_prompt=sampler.negative_prompt,
                                   num_inference_steps=sampler.num_inference_steps,
                                   guidance_scale=sampler.guidance_scale, height=sampler.height, width=sampler.width,
                                   batch_size=bs, progress=False, region_control=sampler.region_control,
                                   region_prompt=sampler.region_prompt)
            for j, r in zip(chunk, made):
                write_generated(j.image_path, r.image, j.sidecar_path, sidecar(r, j.image, **j.fields))
    return sum(len(c) for c in chunks)
