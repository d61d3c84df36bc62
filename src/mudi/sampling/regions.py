"""Regionally controllable sampling (Mix-of-Show, the paper's [14]; "DB+Region" in Fig. 6): each subject's prompt
is confined to its box through the denoiser's attention, the user's prompt (the global prompt) rules elsewhere.

The diffusers pipeline is called unchanged; :func:`regions_applied` swaps attention processors for the call and
puts the originals back after it (also on an error):

* **UNet families** (SD 1.5, SD 2.x, SDXL): every cross-attention layer (``attn2``) computes its usual output
  with the global prompt and once more per region with that subject's regional prompt embeddings, and mixes them
  per token: ``out = global · (1 − covered) + Σ_i m_i / max(1, Σ_j m_j) · region_i`` — Mix-of-Show's rewrite
  (outside every box the global output, inside a box its region's, overlaps averaged). ``m_i`` is subject
  ``i``'s box on the layer's token grid (a cell belongs to a box when its centre does; a box smaller than a cell
  keeps the cell of its centre); the grid follows from the sequence length and the image's aspect ratio.
  With classifier-free guidance the pipeline batches ``[negative; positive]``: regions apply to the
  conditional half only, the negative half stays global (Mix-of-Show pairs each region prompt with the same
  negative prompt, which gives the global negative output anyway). One region covering the whole image with
  the global prompt as its region prompt gives the plain pipeline bit for bit (``x·0 + y·1``, the same
  attention call).
* **MMDiT families** (FLUX.1, SD3): :mod:`mudi.sampling.regions_mmdit` — the regional prompts' text tokens join
  the joint attention, masked.

Regional prompts come from a template (``region_prompt``, default ``"a photo of {subject}"``) filled with each
subject's phrase; Mix-of-Show's are written by hand per region (``"a <cat1>, sitting on the grass"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mudi.core.layout import NormBox
from mudi.errors import MudiError
from mudi.sampling.config import SUPPORTED_REGION_FAMILIES
from mudi.sampling.modifier_tokens import with_loaded_tokens
from mudi.sampling.regions_mmdit import mmdit_regions_applied, supports_mmdit

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

def region_prompts(template: str, phrases: Sequence[str]) -> list[str]:
    """One regional prompt per subject: ``template`` with ``{subject}`` replaced by the subject's phrase (a
    template without ``{subject}`` is every region's prompt as written)."""
    if not template.strip():
        raise MudiError("region_prompt is empty: give a template such as 'a photo of {subject}'")
    return [template.replace("{subject}", p) for p in phrases]


def token_grid(seq_len: int, height: int, width: int) -> tuple[int, int]:
    """The ``(h, w)`` token grid of an attention layer with ``seq_len`` image tokens for an image of
    ``height x width`` pixels: the first power-of-two downscale ``d`` with ``⌈H/d⌉·⌈W/d⌉`` (or ``⌊H/d⌋·⌊W/d⌋``)
    equal to ``seq_len``."""
    d = 1
    while d <= max(height, width):
        for h, w in ((-(-height // d), -(-width // d)), (height // d, width // d)):
            if h * w == seq_len:
                return h, w
        d *= 2
    raise MudiError(f"region control: {seq_len} attention tokens match no downscale of a {width}x{height} image; "
                    "use an image size that is a multiple of the backbone's pixel multiple")


def box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, R, h*w)`` bool: the cells of an ``h x w`` grid whose centre lies in each normalized ``xyxy`` box of
    ``boxes`` ``(B, R, 4)``; a box that holds no centre keeps the cell of its own centre."""
    boxes = boxes.to(torch.float64)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    in_y = (ys >= boxes[..., 1:2]) & (ys < boxes[..., 3:4])
    in_x = (xs >= boxes[..., 0:1]) & (xs < boxes[..., 2:3])
    masks = (in_y[..., :, None] & in_x[..., None, :]).flatten(2)
    empty = ~masks.any(-1)
    if empty.any():
        cy = ((boxes[..., 1] + boxes[..., 3]) / 2 * h).long().clamp(0, h - 1)
        cx = ((boxes[..., 0] + boxes[..., 2]) / 2 * w).long().clamp(0, w - 1)
        idx = (cy * w + cx)[empty]
        masks[empty] = torch.nn.functional.one_hot(idx, h * w).bool()
    return masks


@dataclass
class Regions:
    """What the processors of one pipeline call know: each region's prompt embeddings (``embeds[i]``:
    ``(1, L, D)``), the boxes per image (``boxes``: ``(B, R, 4)`` normalized ``xyxy``, ``B`` images of the call)
    and the image size in pixels."""

    embeds: list[torch.Tensor]
    boxes: torch.Tensor
    height: int
    width: int
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_images(self) -> int:
        return int(self.boxes.shape[0])

    def masks(self, seq_len: int) -> torch.Tensor:
        """``(B, R, seq_len)`` bool masks of the boxes on the token grid of ``seq_len`` tokens (cached)."""
        if seq_len not in self._cache:
            self._cache[seq_len] = box_masks(self.boxes, *token_grid(seq_len, self.height, self.width))
        return self._cache[seq_len]

    def cond_start(self, batch: int) -> int:
        """Where the conditional half starts in a denoiser batch of ``batch`` rows: ``B`` when the pipeline
        batches ``[negative; positive]`` for classifier-free guidance, 0 without guidance."""
        n = self.num_images
        if batch not in (n, 2 * n):
            raise MudiError(f"region control: a denoiser batch of {batch} for {n} image(s); region control needs "
                            "one image per prompt (num_images_per_prompt 1)")
        return batch - n


class RegionCrossAttnProcessor:
    """A UNet cross-attention processor that confines each regional prompt to its box (module docstring); it
    wraps the layer's own processor ``inner``, which computes the global and every regional attention."""

    def __init__(self, inner: Any, regions: Regions) -> None:
        self.inner = inner
        self.regions = regions

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        extra = dict(kwargs, temb=temb) if temb is not None else kwargs

        def attend(context: torch.Tensor | None) -> torch.Tensor:
            return self.inner(attn, hidden_states, context, attention_mask, *args, **extra)

        out = attend(encoder_hidden_states)
        if encoder_hidden_states is None or hidden_states.ndim != 3:
            return out
        r = self.regions
        start = r.cond_start(hidden_states.shape[0])
        masks = r.masks(hidden_states.shape[1]).to(device=out.device, dtype=out.dtype)  # (B, R, S)
        count = masks.sum(1)
        weights = masks / count.clamp(min=1).unsqueeze(1)
        keep = torch.ones(out.shape[:2], device=out.device, dtype=out.dtype)
        keep[start:] = (count == 0).to(out.dtype)
        result = out * keep.unsqueeze(-1)
        for i, emb in enumerate(r.embeds):
            if not bool(masks[:, i].any()):
                continue
            if emb.shape[1:] != encoder_hidden_states.shape[1:]:
                raise MudiError(f"region control: region prompt embeddings {tuple(emb.shape[1:])} differ from the "
                                f"pipeline's {tuple(encoder_hidden_states.shape[1:])}")
            context = encoder_hidden_states.clone()
            context[start:] = emb.to(device=context.device, dtype=context.dtype).expand(r.num_images, -1, -1)
            w = torch.zeros_like(keep)
            w[start:] = weights[:, i]
            result = result + attend(context) * w.unsqueeze(-1)
        return result


def _cross_attention_modules(denoiser: Any) -> list[Any]:
    """The UNet's text cross-attention layers (``attn2``): attention modules with a cross-attention input and
    no joint (added) text projections."""
    return [m for m in denoiser.modules() if hasattr(m, "processor") and getattr(m, "is_cross_attention", False)
            and getattr(m, "add_k_proj", None) is None]


def encode_region_prompts(backbone: Backbone, prompts: Sequence[str]) -> list[torch.Tensor]:
    """Each regional prompt's ``prompt_embeds`` ``(1, L, D)`` from the backbone's own text encoders (SDXL: both,
    concatenated as the pipeline does); a Custom Diffusion LoRA's modifier tokens are written in as for the
    global prompt."""
    return [backbone.encode_prompts([t])["prompt_embeds"] for t in with_loaded_tokens(backbone, prompts)]


def make_regions(backbone: Backbone, embeds: list[torch.Tensor], boxes: Sequence[Sequence[NormBox]], height: int,
                 width: int) -> Regions:
    """The :class:`Regions` of one pipeline call: ``boxes[k]`` are image ``k``'s boxes, one per region."""
    if any(len(b) != len(embeds) for b in boxes):
        raise MudiError(f"region control: {len(embeds)} region prompt(s) but boxes for "
                        f"{sorted({len(b) for b in boxes})} subject(s); give one box per subject")
    return Regions(embeds, torch.tensor([[list(map(float, b)) for b in bs] for bs in boxes], dtype=torch.float64),
                   int(height), int(width))


@contextmanager
def regions_applied(backbone: Backbone, regions: Regions) -> Iterator[None]:
    """Swap the denoiser's attention processors for region-controlled ones for the ``with`` block; the
    originals are put back after it (also on an error)."""
    denoiser = backbone.denoiser
    modules = _cross_attention_modules(denoiser)
    if not modules:
        if not supports_mmdit(denoiser):
            raise MudiError(f"region control is implemented for {SUPPORTED_REGION_FAMILIES}; {backbone.family} has neither "
                            "text cross-attention layers nor a supported joint attention: drop --region_control")
        with mmdit_regions_applied(denoiser, regions):
            yield
        return
    originals = [m.processor for m in modules]
    try:
        for m, p in zip(modules, originals):
            m.processor = RegionCrossAttnProcessor(p, regions)
        yield
    finally:
        for m, p in zip(modules, originals):
            m.processor = p
