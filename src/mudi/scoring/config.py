"""``EvaluateConfig``: every option of ``mudi evaluate`` (paper Sec. 4.3, Algorithm 3, Appendix A.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mudi.adapters import registry
from mudi.errors import MudiError

CONFIG_FILE = "config.yaml"


@dataclass
class EvaluateConfig:
    images: str = field(default="", metadata={"help": "folder of generated images (or one image file)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders (subject.yaml), a benchmark pair folder, or plain folders of reference photos "
                "(then give class_nouns)"})
    class_nouns: list[str] = field(default_factory=list, metadata={
        "help": "class noun per plain reference folder without subject.yaml, in order (e.g. 'toy,toy')"})
    output_dir: str = field(default="", metadata={"help": "where to write results (default: <images>/evaluation)",
                                                  "flags": ["-o"]})
    prompt: str = field(default="", metadata={
        "help": "prompt for images without a <stem>.json sidecar; [V1], [V2]... stand for the subjects"})
    detector: str = field(default="owlv2", metadata={"help": f"detector: {' | '.join(registry.names('detector'))}"})
    detector_path: str = field(default="", metadata={"help": "hub id or local folder overriding the detector's default"})
    threshold: float = field(default=0.4, metadata={"help": "detection score threshold (the authors use 0.4)"})
    nms_iou: float | None = field(default=None, metadata={
        "help": "merge overlapping boxes above this IoU (mudi's option); default none: every box above the threshold "
                "counts, each with its best-scoring query (the authors' D&C)"})
    embedders: list[str] = field(default_factory=lambda: ["dinov2"], metadata={
        "help": "subject-fidelity embedders (dinov2: D&C-DINO, dreamsim: D&C-DS): "
                + ", ".join(registry.names("embedder"))})
    text_scorers: list[str] = field(default_factory=lambda: ["clip"], metadata={
        "help": "text-fidelity scorers: clip (CLIP score), image_reward, tiny-clip; empty for none"})
    norm: Literal["spectral", "frobenius"] = field(default="spectral", metadata={
        "help": "norm of S_GT - S_DC: spectral (the authors' code) or frobenius (squared, the paper's text)"})
    matching: Literal["greedy", "hungarian"] = field(default="greedy", metadata={
        "help": "match detections to subjects: greedy (Algorithm 3) or hungarian (optimal)"})
    mixed_margin: float = field(default=0.1, metadata={
        "help": "flag 'mixed' when an off-diagonal S_DC entry exceeds S_GT's by more than this"})
    reference_padding: Literal["none", "white_square"] = field(default="none", metadata={
        "help": "reference photos embedded as they are (none, the authors') or padded to a white square like the "
                "detected crops"})
    reference_crop: Literal["full", "mask_box"] = field(default="full", metadata={
        "help": "reference photos as whole photos (full) or cropped to their mask's box (mask_box)"})
    batch_size: int = field(default=8, metadata={"help": "generated images per detection/embedding batch"})
    cache_dir: str = field(default="", metadata={"help": "folder caching reference embeddings by file hash"})
    device: str = field(default="auto", metadata={
        "help": "torch device: auto (CUDA, then MPS, then CPU), cpu, cuda:0, ..."})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="float32", metadata={
        "help": "dtype of the detector and embedders: float32 (the authors'; a half-precision score can cross the "
                "0.4 detection threshold and change a count, docs/evaluate.md), or float16/bfloat16/auto (faster "
                "on a GPU)"})
    report: bool = field(default=True, metadata={"help": "write report.html"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise MudiError(f"threshold={self.threshold}: must be between 0 and 1 (the authors use 0.4)")
        if self.nms_iou is not None and not 0.0 < self.nms_iou <= 1.0:
            raise MudiError(f"nms_iou={self.nms_iou}: must be in (0, 1], or unset for no NMS")
        if self.batch_size < 1:
            raise MudiError(f"batch_size={self.batch_size}: must be at least 1")
        if not self.embedders:
            raise MudiError("embedders is empty; give at least one, e.g. --embedders dinov2")
        if len(set(self.embedders)) != len(self.embedders):
            raise MudiError(f"embedders {self.embedders} lists a name twice")
        registry.check("detector", [self.detector])
        registry.check("embedder", self.embedders)
        registry.check("text_scorer", self.text_scorers)
