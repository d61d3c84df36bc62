"""``SegmentConfig`` (``mudi segment``) and the ``DETECTOR+SEGMENTER`` backend names shared with ``mudi prior``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mudi.adapters import registry
from mudi.devices import check_dtype_name
from mudi.errors import MudiError

CONFIG_FILE = "segment_config.yaml"


def parse_backend(backend: str) -> tuple[str | None, str]:
    """``"owlv2+sam"`` → ``("owlv2", "sam")``; ``"grabcut"`` → ``(None, "grabcut")`` (no detector)."""
    detectors, segmenters = registry.names("detector"), registry.names("segmenter")
    parts = [p.strip() for p in backend.split("+") if p.strip()]
    if len(parts) == 1 and parts[0] in segmenters:
        return None, parts[0]
    if len(parts) == 2 and parts[0] in detectors and parts[1] in segmenters:
        return parts[0], parts[1]
    choices = ["+".join((d, s)) for d in detectors for s in segmenters] + list(segmenters)
    raise MudiError(f"unknown backend {backend!r}; use DETECTOR+SEGMENTER or SEGMENTER, e.g. "
                    f"{', '.join(choices[:4])} (detectors: {sorted(detectors)}, segmenters: {sorted(segmenters)})")


@dataclass
class SegmentConfig:
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders, folders of them, benchmark pair folders or prior folders"})
    backend: str = field(default="owlv2+sam", metadata={
        "help": "DETECTOR+SEGMENTER or SEGMENTER: owlv2+sam (paper), owlv2+grabcut, grabcut (offline, no "
                "weights), tiny-owlv2+tiny-sam (tests)"})
    detector_model: str | None = field(default=None, metadata={
        "help": "detector checkpoint (hub id or local folder); default google/owlv2-base-patch16-ensemble"})
    segmenter_model: str | None = field(default=None, metadata={
        "help": "segmenter checkpoint (hub id or local folder); default facebook/sam-vit-huge"})
    threshold: float = field(default=0.1, metadata={"help": "detection score threshold"})
    min_mask_fraction: float = field(default=0.005, metadata={
        "help": "masks covering less of the image than this are reported as tiny_mask and not written"})
    overwrite: bool = field(default=False, metadata={"help": "replace existing (user) masks"})
    batch_size: int = field(default=4, metadata={"help": "images per detector/segmenter batch"})
    device: str = field(default="auto", metadata={
        "help": "torch device for the models: auto (CUDA, then MPS, then CPU), cpu, cuda:0, ..."})
    dtype: str = field(default="auto", metadata={
        "help": "auto (bfloat16/float16 on a GPU, float32 on the CPU), float32, float16 or bfloat16"})
    preview_tile: int = field(default=192, metadata={"help": "side of one tile of segment_preview.png (pixels)"})

    def __post_init__(self) -> None:
        parse_backend(self.backend)
        if not 0.0 <= self.threshold <= 1.0:
            raise MudiError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.min_mask_fraction < 1.0:
            raise MudiError(f"min_mask_fraction must be in [0, 1), got {self.min_mask_fraction}")
        if self.batch_size < 1:
            raise MudiError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.preview_tile < 32:
            raise MudiError(f"preview_tile must be >= 32 pixels, got {self.preview_tile}")
        check_dtype_name(self.dtype)
