"""Regionally controllable sampling for the MMDiT families (FLUX.1, SD3): joint attention, masked.

A forward pre-hook on the transformer appends every regional prompt's text tokens to ``encoder_hidden_states``
(and zero position ids to FLUX's ``txt_ids``); the joint-attention processors then apply one mask
(:func:`joint_mask`): image tokens attend to every image token and to the text of the regions they lie in —
the global prompt's text where they lie in none —, region ``i``'s text tokens attend to themselves and to
region ``i``'s image tokens, the global text attends to itself and to every image token. The transformer
returns image tokens only, so nothing downstream sees the extra text. With classifier-free guidance (SD3
batches ``[negative; positive]``) the negative half has no regions: its image tokens see the negative prompt
only, as in :mod:`mudi.sampling.regions` for the UNet.

Unlike the UNet's rewrite this is not bit for bit the plain pipeline with one whole-image region: the same
mathematics, but the attention now reduces over extra (masked) keys, so the last bits move; the tests use a
stated tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mudi.errors import MudiError

if TYPE_CHECKING:
    from mudi.sampling.regions import Regions

TEXT_FIRST = ("FluxAttnProcessor", "FluxAttnProcessor2_0")  # FLUX: [text; image] in one sequence
IMAGE_FIRST = ("JointAttnProcessor2_0",)  # SD3: [image; text]


def joint_mask(masks: torch.Tensor, start: int, total: int, text_len: int, region_lens: list[int],
               text_first: bool) -> torch.Tensor:
    """``(total, 1, S, S)`` bool (True: may attend) for a joint sequence of the global text (``text_len``), the
    regions' texts (``region_lens``) and ``N`` image tokens; ``masks`` ``(B, R, N)``: the regions on the image
    token grid, for the conditional rows ``start:``."""
    n_img = masks.shape[-1]
    tt = text_len + sum(region_lens)
    size = tt + n_img
    m = torch.zeros(total, len(region_lens), n_img, dtype=torch.bool, device=masks.device)
    m[start:] = masks
    full = torch.zeros(total, size, size, dtype=torch.bool, device=masks.device)
    img = slice(tt, size)
    full[:, img, img] = True
    full[:, :text_len, :text_len] = True
    full[:, :text_len, img] = True
    full[:, img, :text_len] = ~m.any(1).unsqueeze(-1)
    s = text_len
    for i, n in enumerate(region_lens):
        full[:, s:s + n, s:s + n] = True
        full[:, s:s + n, img] = m[:, i].unsqueeze(1)
        full[:, img, s:s + n] = m[:, i].unsqueeze(-1)
        s += n
    if not text_first:
        order = torch.cat([torch.arange(tt, size), torch.arange(0, tt)]).to(masks.device)
        full = full[:, order][:, :, order]
    return full.unsqueeze(1)


class _JointState:
    """The regions of the call and what the pre-hook saw of the current denoiser step."""

    def __init__(self, regions: Regions, text_first: bool) -> None:
        self.regions, self.text_first = regions, text_first
        self.text_len = 0
        self._masks: dict = {}

    def mask(self, total: int, size: int, device: torch.device) -> torch.Tensor:
        key = (total, size, self.text_len, str(device))
        if key not in self._masks:
            lens = [int(e.shape[1]) for e in self.regions.embeds]
            n_img = size - self.text_len - sum(lens)
            masks = self.regions.masks(n_img).to(device)
            self._masks = {key: joint_mask(masks, self.regions.cond_start(total), total, self.text_len, lens,
                                           self.text_first)}
        return self._masks[key]


class FluxRegionProcessor:
    """FLUX's joint attention (double- and single-stream blocks) with the region mask: the block's own
    processor ``inner`` given ``attention_mask``."""

    def __init__(self, inner: Any, state: _JointState) -> None:
        self.inner, self.state = inner, state

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        size = hidden_states.shape[1] + (encoder_hidden_states.shape[1] if encoder_hidden_states is not None else 0)
        mask = self.state.mask(hidden_states.shape[0], size, hidden_states.device)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask=mask,
                          image_rotary_emb=image_rotary_emb)


class SD3RegionProcessor:
    """diffusers' ``JointAttnProcessor2_0`` (SD3) with the region mask given to the attention kernel."""

    def __init__(self, inner: Any, state: _JointState) -> None:
        self.inner, self.state = inner, state

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        if encoder_hidden_states is None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        b, n_img = hidden_states.shape[:2]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        eq, ek = heads(attn.add_q_proj(encoder_hidden_states)), heads(attn.add_k_proj(encoder_hidden_states))
        ev = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            eq = attn.norm_added_q(eq)
        if attn.norm_added_k is not None:
            ek = attn.norm_added_k(ek)
        q, k, v = torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        mask = self.state.mask(b, q.shape[2], q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1]).to(q.dtype)
        image, text = out[:, :n_img], out[:, n_img:]
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        image = attn.to_out[1](attn.to_out[0](image))
        return image, text


def _joint_modules(denoiser: Any) -> tuple[list[Any], bool] | None:
    """The joint-attention modules to wrap and whether their sequence is text first; None when the
    denoiser's attention is of no supported kind."""
    flux = [m for m in denoiser.modules() if type(getattr(m, "processor", None)).__name__ in TEXT_FIRST]
    if flux:
        return flux, True
    sd3 = [m for m in denoiser.modules() if type(getattr(m, "processor", None)).__name__ in IMAGE_FIRST
           and getattr(m, "add_k_proj", None) is not None]
    return (sd3, False) if sd3 else None


def supports_mmdit(denoiser: Any) -> bool:
    return _joint_modules(denoiser) is not None


@contextmanager
def mmdit_regions_applied(denoiser: Any, regions: Regions) -> Iterator[None]:
    """The pre-hook and the masked processors for the ``with`` block; the originals are put back after it."""
    found = _joint_modules(denoiser)
    if found is None:
        raise MudiError("region control: this transformer's joint attention is of no supported kind (FLUX.1, SD3)")
    modules, text_first = found
    state = _JointState(regions, text_first)
    wrapper = FluxRegionProcessor if text_first else SD3RegionProcessor

    def append_region_text(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        text = kwargs.get("encoder_hidden_states")
        if text is None:
            raise MudiError("region control: the pipeline called its transformer without encoder_hidden_states=")
        extra = torch.cat([e.to(device=text.device, dtype=text.dtype) for e in regions.embeds], dim=1)
        if extra.shape[-1] != text.shape[-1]:
            raise MudiError(f"region control: region prompt embeddings of width {extra.shape[-1]}, the pipeline's "
                            f"are {text.shape[-1]}")
        state.text_len = int(text.shape[1])
        kwargs["encoder_hidden_states"] = torch.cat([text, extra.expand(text.shape[0], -1, -1)], dim=1)
        ids = kwargs.get("txt_ids")
        if ids is not None:  # FLUX: the text's position ids are zeros; the regions' are too
            pad = ids.new_zeros((*ids.shape[:-2], extra.shape[1], ids.shape[-1]))
            kwargs["txt_ids"] = torch.cat([ids, pad], dim=-2)
        return args, kwargs

    originals = [m.processor for m in modules]
    handle = denoiser.register_forward_pre_hook(append_region_text, with_kwargs=True)
    try:
        for m, p in zip(modules, originals):
            m.processor = wrapper(p, state)
        yield
    finally:
        handle.remove()
        for m, p in zip(modules, originals):
            m.processor = p
