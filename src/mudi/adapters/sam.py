"""Segment Anything (transformers ``SamModel`` / ``Sam2Model``) behind :class:`Segmenter`.

MuDI segments each subject with SAM prompted by the OWLv2 box (paper Sec. 4.1, Fig. 3a). SAM returns three
candidate masks per box (``multimask_output``); the one with the highest predicted IoU is kept, upsampled to
the original image size, and optionally cleaned (largest connected component, holes filled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.mask_cleanup import clean_mask
from mudi.adapters.weights import missing_weights_error, place_model
from mudi.devices import parse_dtype
from mudi.errors import MudiError

DEFAULT_SAM = "facebook/sam-vit-huge"
SAM2_PREFIX = "facebook/sam2"


class SamSegmenter:
    """Box-prompted SAM. ``segment`` returns one ``(H, W)`` bool mask per image.

    Args:
        model: a ``SamModel`` (or ``Sam2Model``), moved to ``device``/``dtype`` and put in eval mode here.
        processor: the matching ``SamProcessor`` (or ``Sam2Processor``).
        device, dtype: where and in which precision the model runs (CPU/float32 by default).
        batch_size: images per forward pass.
        use_cleanup: keep the largest connected component and fill holes.
        mask_threshold: logit threshold of the chosen mask.
    """

    def __init__(self, model: Any, processor: Any, device: Any = "cpu", dtype: Any = None, batch_size: int = 2,
                 use_cleanup: bool = True, mask_threshold: float = 0.0) -> None:
        if batch_size < 1:
            raise MudiError(f"SamSegmenter batch_size must be >= 1, got {batch_size}")
        self.device, self.dtype, self.model = place_model(model, device, dtype)
        self.processor = processor
        self.batch_size = batch_size
        self.use_cleanup = use_cleanup
        self.mask_threshold = mask_threshold

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str = DEFAULT_SAM, device: Any = "cpu",
                        dtype: Any = None, **kwargs: Any) -> SamSegmenter:
        """Load SAM (``facebook/sam-vit-*``) or SAM 2.1 (``facebook/sam2.1-hiera-*``) weights; the only place
        weights are read."""
        if SAM2_PREFIX in str(pretrained_model_name_or_path).lower():
            try:
                from transformers import Sam2Model as Model
                from transformers import Sam2Processor as Processor
            except ImportError:
                raise MudiError(f"{pretrained_model_name_or_path}: SAM 2 needs a transformers version with "
                                f"Sam2Model; upgrade transformers or use {DEFAULT_SAM}") from None
        else:
            from transformers import SamModel as Model
            from transformers import SamProcessor as Processor
        try:
            processor = Processor.from_pretrained(pretrained_model_name_or_path)
            model = Model.from_pretrained(pretrained_model_name_or_path, dtype=parse_dtype(dtype))
        except (OSError, ValueError) as e:
            raise missing_weights_error("SAM", pretrained_model_name_or_path, e) from None
        return cls(model, processor, device=device, dtype=dtype, **kwargs)

    @classmethod
    def build_tiny(cls, device: Any = "cpu", dtype: Any = None, seed: int = 0, **kwargs: Any) -> SamSegmenter:
        """A tiny random SAM (64-pixel input) built from a config in memory. Deterministic in ``seed``."""
        import torch
        from transformers import SamConfig, SamModel, SamProcessor

        config = SamConfig(
            vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=4,
                               image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                               num_pos_feats=16),
            prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
            mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                     iou_head_hidden_dim=32))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SamModel(config).eval()
        try:
            from transformers.models.sam.image_processing_pil_sam import (
                SamImageProcessorPil as ImageProcessor,
            )
        except ImportError:  # older transformers: one numpy processor
            from transformers import SamImageProcessor as ImageProcessor
        image_processor = ImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                         mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
        return cls(model, SamProcessor(image_processor=image_processor), device=device, dtype=dtype, **kwargs)

    def segment(self, images: Sequence[np.ndarray],
                boxes: Sequence[tuple[float, float, float, float] | None]) -> list[np.ndarray]:
        """One ``(H, W)`` bool mask per ``(H, W, 3)`` uint8 image, for the object in its ``(x0, y0, x1, y1)``
        box in original pixels (``None``: the whole image is the box)."""
        import torch

        if len(images) != len(boxes):
            raise MudiError(f"segment: {len(images)} images but {len(boxes)} boxes; give one box (or None) per image")
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            batch = [np.asarray(im) for im in images[start:start + self.batch_size]]
            batch_boxes = []
            for im, box in zip(batch, boxes[start:start + self.batch_size]):
                h, w = im.shape[:2]
                box = (0.0, 0.0, float(w), float(h)) if box is None else tuple(float(v) for v in box)
                batch_boxes.append([list(box)])
            inputs = self.processor(images=batch, input_boxes=batch_boxes, return_tensors="pt")
            with torch.no_grad():
                outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
                                     input_boxes=inputs["input_boxes"].to(self.device, self.dtype),
                                     multimask_output=True)
            # pred_masks (B, 1 box, 3 candidates, h', w'); iou_scores (B, 1, 3): keep the best candidate
            best = outputs.iou_scores[:, 0].float().argmax(dim=-1)
            chosen = outputs.pred_masks[torch.arange(len(batch)), 0, best][:, None, None].float().cpu()
            masks = self.processor.image_processor.post_process_masks(
                list(chosen), inputs["original_sizes"], inputs["reshaped_input_sizes"],
                mask_threshold=self.mask_threshold, binarize=True)
            for m in masks:
                mask = m[0, 0].numpy().astype(bool)
                out.append(clean_mask(mask) if self.use_cleanup else mask)
        return out
