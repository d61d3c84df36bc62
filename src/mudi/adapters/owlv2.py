"""OWLv2 open-vocabulary detector (transformers ``Owlv2ForObjectDetection``) behind :class:`Detector`.

MuDI finds each subject's box with OWLv2 before SAM segments it (paper Sec. 4.1, Fig. 3a), and the
Detect-and-Compare metric detects the class nouns with it (Sec. 4.3, threshold 0.4).

OWLv2's processor pads every image at the bottom/right to a square before resizing it, so the model's
normalised boxes are fractions of the *padded square*: they are scaled by ``max(H, W)`` and clipped to the
original ``W x H``, which puts them in the original image's pixels.

The processor's own resize (scipy Gaussian anti-aliasing, then a zoom, per image in numpy) costs ~0.3 s per
1024x1024 photo on a CPU, more than the model; :func:`preprocess_images` does the same pad-to-square,
resize and normalisation on torch tensors (``F.interpolate(..., antialias=True)``), ~20x faster, with
pixel values within a few hundredths of the processor's (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.base import Detection
from mudi.adapters.tiny_tokenizer import TINY_CLIP_VOCAB_SIZE, build_tiny_clip_tokenizer
from mudi.adapters.weights import missing_weights_error, place_model
from mudi.core.geometry import nms
from mudi.devices import parse_dtype
from mudi.errors import MudiError

DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"


def preprocess_images(images: Sequence[np.ndarray], image_processor: Any) -> Any:
    """OWLv2's image preprocessing, fast: ``(N, 3, S, S)`` float32 ``pixel_values`` for ``(H, W, 3)`` uint8 RGB images.

    Like the processor: pad at the bottom/right with black to a ``max(H, W)`` square, resize to the
    processor's ``size`` (bilinear with anti-aliasing, here torch's instead of scipy's Gaussian + zoom),
    scale to [0, 1] and normalise with the processor's ``image_mean`` / ``image_std``.
    """
    import torch
    import torch.nn.functional as F

    size = image_processor.size
    out_hw = (int(size["height"]), int(size["width"]))
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for im in images:
        im = np.asarray(im)
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise MudiError(f"OWLv2 expects (H, W, 3) uint8 RGB images, got {im.shape} {im.dtype}")
        h, w = im.shape[:2]
        side = max(h, w)
        # uint8 in channels-last memory: torch's fast anti-aliased resampling path (rounding costs < 1/255)
        x = torch.from_numpy(np.array(im, copy=True)).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8
        x = F.pad(x, (0, side - w, 0, side - h))  # black at the right / bottom, as the processor pads
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=side > max(out_hw))
        out.append(x.float())
    pixels = torch.cat(out) / 255.0
    return (pixels - mean) / std


class Owlv2Detector:
    """Text-queried detector. ``detect`` returns boxes ``(x0, y0, x1, y1)`` in original-image pixels.

    Args:
        model: an ``Owlv2ForObjectDetection`` (moved to ``device``/``dtype`` and put in eval mode here).
        processor: the matching ``Owlv2Processor`` (tokenizer + image processor).
        device, dtype: where and in which precision the model runs (CPU/float32 by default).
        batch_size: images per forward pass.
        nms_iou: OWLv2 predicts one box per image patch, so one object yields several overlapping boxes;
            boxes overlapping a better one by more than this IoU are dropped (``None``: keep all).
        use_fast_preprocess: resize images with :func:`preprocess_images` (torch) instead of the processor's
            scipy path (same boxes up to resampling differences, ~20x less CPU time per image).
    """

    def __init__(self, model: Any, processor: Any, device: Any = "cpu", dtype: Any = None,
                 batch_size: int = 4, nms_iou: float | None = 0.3, use_fast_preprocess: bool = True) -> None:
        if batch_size < 1:
            raise MudiError(f"Owlv2Detector batch_size must be >= 1, got {batch_size}")
        self.device, self.dtype, self.model = place_model(model, device, dtype)
        self.processor = processor
        self.batch_size = batch_size
        self.nms_iou = nms_iou
        self.use_fast_preprocess = use_fast_preprocess

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str = DEFAULT_OWLV2, device: Any = "cpu",
                        dtype: Any = None, **kwargs: Any) -> Owlv2Detector:
        """Load OWLv2 weights from the hub cache or a local folder (the only place weights are read)."""
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        try:
            processor = Owlv2Processor.from_pretrained(pretrained_model_name_or_path)
            model = Owlv2ForObjectDetection.from_pretrained(pretrained_model_name_or_path, dtype=parse_dtype(dtype))
        except (OSError, ValueError) as e:
            raise missing_weights_error("OWLv2", pretrained_model_name_or_path, e) from None
        return cls(model, processor, device=device, dtype=dtype, **kwargs)

    @classmethod
    def build_tiny(cls, device: Any = "cpu", dtype: Any = None, seed: int = 0, **kwargs: Any) -> Owlv2Detector:
        """A tiny random OWLv2 built from a config in memory (tests, offline demos). Deterministic in ``seed``."""
        import torch
        from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor

        tokenizer = build_tiny_clip_tokenizer(model_max_length=16)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        config = Owlv2Config(
            text_config=dict(vocab_size=TINY_CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=37,
                             num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                             bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
            vision_config=dict(image_size=32, patch_size=4, hidden_size=32, intermediate_size=37,
                               num_hidden_layers=2, num_attention_heads=4),
            projection_dim=32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Owlv2ForObjectDetection(config).eval()
            # random box-head weights put every box at a corner; with a zero last layer each patch predicts
            # its own grid cell (OWLv2's box bias), so the tiny model's boxes are valid and spread out
            torch.nn.init.zeros_(model.box_head.dense2.weight)
            torch.nn.init.zeros_(model.box_head.dense2.bias)
        processor = Owlv2Processor(image_processor=_tiny_image_processor(32), tokenizer=tokenizer)
        return cls(model, processor, device=device, dtype=dtype, **kwargs)

    def detect(self, images: Sequence[np.ndarray], queries: Sequence[Sequence[str]],
               threshold: float) -> list[list[Detection]]:
        """For each ``(H, W, 3)`` uint8 image, the detections of its queries scoring >= ``threshold``, best first.

        Scores are OWLv2's per-box sigmoid of the best-matching query's logit.
        """
        import torch

        if len(images) != len(queries):
            raise MudiError(f"detect: {len(images)} images but {len(queries)} query lists; give one list per image")
        for i, q in enumerate(queries):
            if not q or any(not isinstance(s, str) or not s.strip() for s in q):
                raise MudiError(f"detect: the queries of image {i} must be non-empty text, got {list(q)!r}")
        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            batch = [np.asarray(im) for im in images[start:start + self.batch_size]]
            batch_queries = [list(q) for q in queries[start:start + self.batch_size]]
            if self.use_fast_preprocess:
                inputs = dict(self.processor(text=batch_queries, return_tensors="pt", truncation=True))
                inputs["pixel_values"] = preprocess_images(batch, self.processor.image_processor)
            else:
                inputs = self.processor(text=batch_queries, images=batch, return_tensors="pt", truncation=True)
            inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                      for k, v in inputs.items()}
            with torch.no_grad():
                outputs = self.model(**inputs)
            logits = outputs.logits.float().cpu()        # (B, num_patches, max queries in batch)
            pred_boxes = outputs.pred_boxes.float().cpu()  # (B, num_patches, 4) cx, cy, w, h of the padded square
            for k, (im, q) in enumerate(zip(batch, batch_queries)):
                out.append(self._to_detections(im.shape[:2], q, logits[k], pred_boxes[k], threshold))
        return out

    def _to_detections(self, size_hw: tuple[int, int], queries: list[str], logits: Any, pred_boxes: Any,
                       threshold: float) -> list[Detection]:
        h, w = size_hw
        # the " " queries padding shorter query lists in a batch are not this image's: ignore their logits
        best = logits[:, : len(queries)].max(dim=-1)
        scores = best.values.sigmoid().numpy()
        labels = best.indices.numpy()
        cx, cy, bw, bh = pred_boxes.numpy().T
        side = float(max(h, w))  # OWLv2 pads bottom/right to a square: boxes are fractions of its side
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) * side
        boxes = np.clip(boxes, 0.0, [w, h, w, h])  # the padding's rows/columns are not the image
        keep = (scores >= threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores, labels, boxes = scores[keep], labels[keep], boxes[keep]
        order = (nms(boxes, scores, self.nms_iou) if self.nms_iou is not None
                 else list(np.argsort(-scores, kind="stable")))
        return [Detection(box_xyxy=tuple(float(v) for v in boxes[i]), score=float(scores[i]),
                          query_index=int(labels[i]), query=queries[int(labels[i])]) for i in order]


def _tiny_image_processor(side: int) -> Any:
    """The OWLv2 image processor at ``side`` pixels; the PIL/numpy one when torchvision is absent."""
    try:
        from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil as Proc
    except ImportError:  # older transformers: one numpy processor
        from transformers import Owlv2ImageProcessor as Proc
    return Proc(size={"height": side, "width": side})
