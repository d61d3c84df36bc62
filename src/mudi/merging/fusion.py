"""Gradient fusion (Mix-of-Show, Gu et al., NeurIPS 2023, Sec. 3.2): one weight per layer that best reproduces
each LoRA's outputs on that LoRA's own input activations.

For a layer with frozen weight ``W0`` and updates ``ΔW_i`` (weight ``w_i`` folded in), with ``X_i`` the layer's
inputs while the model with LoRA ``i`` alone generates prompts of LoRA ``i``'s subjects,

    W* = argmin_W  Σ_i ‖(W0 + ΔW_i) X_i − W X_i‖²  +  ε ‖W − W0‖²,

so ``ΔW* = W* − W0 = (Σ_i ΔW_i G_i)(Σ_i G_i + ε I)⁻¹`` with ``G_i = X_i X_iᵀ / n_i`` (``W0`` cancels; ``ε`` is
``ridge`` times the mean of ``diag(Σ G_i)``: no change along input directions no LoRA's activations visit).
Mix-of-Show solves the same least squares by gradient descent; the closed form is exact. ``ΔW*`` is then written
at the chosen rank by a truncated SVD (:func:`mudi.merging.methods.factorize_dense`).

Activations come from the pipeline itself: each LoRA alone (at its weight) generates ``num_samples`` images of
its prompts at the backbone's resolution (fixed seeds, the sampler's ``num_inference_steps``), and a forward
pre-hook on every merged layer accumulates ``Σ x xᵀ`` of its input rows — the ``(in, in)`` Gram, never the
activations themselves. Memory: one Gram per merged layer per LoRA, on the CPU (SDXL's attention layers, about
about 5 GB per LoRA in float32). Conv2d layers with a kernel larger than 1x1 get the weighted sum instead (their
unfolded Grams would be ``(in·k·k)²``), and say so in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT
from mudi.merging.formats import LoraUpdates
from mudi.merging.methods import (
    MergedLayer,
    factorize_dense,
    factorize_low_rank,
    kernel_of,
    layer_names,
    stacked_factors,
)

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)

#: The prompts each subject's activations come from (cycled over the samples): ``{}`` is the subject's phrase.
PROMPT_TEMPLATES = ("a photo of {}", "a close-up photo of {}", "{} sitting on a wooden floor", "{} in a garden")


def subject_prompts(phrases: Sequence[str], num_samples: int) -> list[str]:
    """``num_samples`` prompts naming the subjects in turn, with :data:`PROMPT_TEMPLATES` in turn."""
    pairs = [(t, p) for t in PROMPT_TEMPLATES for p in phrases]
    return [pairs[k % len(pairs)][0].format(pairs[k % len(pairs)][1]) for k in range(num_samples)]


# ------------------------------------------------------------------------------------------------ activations
class GramCollector:
    """Forward pre-hooks on named layers of ``denoiser`` that accumulate the Gram ``Σ x xᵀ`` of their input rows
    (Linear: the last dimension; 1x1 Conv2d: the channels of every pixel) in float32 on the layer's device.
    Layers fed the very same tensor (``to_q``, ``to_k``, ``to_v``) share one product per call."""

    def __init__(self, denoiser: Any, names: Sequence[str]) -> None:
        self.denoiser = denoiser
        self.names = list(names)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._handles: list[Any] = []
        self._last: tuple[Any, torch.Tensor, int] | None = None

    def __enter__(self) -> GramCollector:
        for name in self.names:
            module = self.denoiser.get_submodule(name)
            base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
            if isinstance(base, torch.nn.Conv2d) and tuple(base.kernel_size) != (1, 1):
                continue  # fused by the weighted sum instead
            self._handles.append(module.register_forward_pre_hook(self._hook(name, base)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._last = None

    def _hook(self, name: str, base: Any) -> Any:
        def hook(module: Any, args: tuple) -> None:
            x = args[0]
            if self._last is not None and self._last[0] is x:
                gram, n = self._last[1], self._last[2]
            else:
                rows = x.movedim(1, -1) if isinstance(base, torch.nn.Conv2d) else x
                rows = rows.reshape(-1, rows.shape[-1]).to(torch.float32)
                gram, n = rows.T @ rows, int(rows.shape[0])
                self._last = (x, gram, n)
            if name in self.sums:
                self.sums[name] += gram
            else:
                self.sums[name] = gram.clone()
            self.counts[name] = self.counts.get(name, 0) + n
        return hook

    def grams(self) -> dict[str, torch.Tensor]:
        """``G = Σ x xᵀ / n`` per layer that ran, float32 on the CPU."""
        return {k: (v / max(self.counts[k], 1)).cpu() for k, v in self.sums.items()}


def collect_grams(backbone: Backbone, adapter_name: str, weight: float, prompts: Sequence[str], names: Sequence[str],
                  num_inference_steps: int, seed: int) -> dict[str, torch.Tensor]:
    """The input Grams of layers ``names`` while LoRA ``adapter_name`` alone (at ``weight``) generates one image of
    each prompt (seed ``seed + k`` for prompt ``k``, the backbone's resolution and guidance, mudi's negative prompt)."""
    pipe = backbone.pipeline
    pipe.set_adapters([adapter_name], adapter_weights=[float(weight)])
    size = int(backbone.default_resolution)
    with GramCollector(backbone.denoiser, names) as collector, torch.no_grad():
        for k, prompt in enumerate(prompts):
            kwargs: dict = dict(prompt=[prompt], num_inference_steps=num_inference_steps, height=size, width=size,
                                generator=[torch.Generator(device=backbone.device).manual_seed(int(seed) + k)],
                                output_type="latent")
            if backbone.supports_negative_prompt:
                kwargs["negative_prompt"] = [DEFAULT_NEGATIVE_PROMPT]
            pipe(**kwargs)
    return collector.grams()


# ------------------------------------------------------------------------------------------------ fusion
@dataclass
class FusionResult:
    """The fused layers (factorised) and how well the merge keeps each LoRA's outputs.

    ``output_residuals[kind][i]``, for ``kind`` in ``fusion`` (the factorised ΔW* written out), ``fusion_exact``
    (ΔW* before factorisation) and ``weighted_sum`` (the exact ``Σ_i w_i s_i B_i A_i``): LoRA ``i``'s relative output
    residual on its own activations, ``sqrt(Σ_l ‖(ΔW_i − M_l) X_i‖² / Σ_l ‖ΔW_i X_i‖²)`` over the fused layers ``l``
    (0: every output of LoRA ``i`` reproduced exactly; 1: as far off as dropping the LoRA). The fusion minimises
    the sum over LoRAs of the absolute squares, ``Σ_i (residual_i · output_norms_i)²``, so a LoRA much stronger
    than the others can come out a little worse than under the plain sum while the others gain."""

    layers: dict[str, MergedLayer]
    output_residuals: dict[str, list[float]] = field(default_factory=dict)
    output_norms: list[float] = field(default_factory=list)  # sqrt(Σ_l ‖ΔW_i X_i‖² / n_i): each LoRA's own effect
    fallback_layers: list[str] = field(default_factory=list)  # Conv2d k x k: merged by the weighted sum instead


def _dense_update(inputs: Sequence[LoraUpdates], weights: Sequence[float], i: int, name: str,
                  shape: tuple[int, int], device: Any) -> torch.Tensor:
    u = inputs[i].get(name)
    if u is None or weights[i] == 0:
        return torch.zeros(shape, dtype=torch.float64, device=device)
    return float(weights[i]) * u.scale * (u.up().to(device, torch.float64) @ u.down().to(device, torch.float64))


def _quadratic(E: torch.Tensor, G: torch.Tensor) -> float:
    """``‖E X‖² / n = tr(E G Eᵀ)``."""
    return float(((E @ G) * E).sum())


def fuse(inputs: Sequence[LoraUpdates], weights: Sequence[float], grams: Sequence[dict[str, torch.Tensor]],
         rank: int = 0, ridge: float = 1e-4, device: Any = "cpu") -> FusionResult:
    """Gradient fusion of every layer (closed form, float64 on ``device``), factorised at ``rank`` (0: ``Σ r_i`` of
    the LoRAs that have the layer); the output residuals are measured on the way (one layer in memory at a time)."""
    kinds = ("fusion", "fusion_exact", "weighted_sum")
    num = {k: [0.0] * len(inputs) for k in kinds}
    den = [0.0] * len(inputs)
    result = FusionResult(layers={})
    for name in layer_names(inputs):
        up, down = stacked_factors(inputs, weights, name)
        kernel = kernel_of(inputs, name)
        keep = rank if rank > 0 else sum(u[name].rank for u in inputs if name in u)
        if any(name not in g for g in grams):
            result.layers[name] = factorize_low_rank(up, down, keep, kernel)
            result.fallback_layers.append(name)
            continue
        shape = (up.shape[0], down.shape[1])
        G = [g[name].to(device, torch.float64) for g in grams]
        D = [_dense_update(inputs, weights, i, name, shape, device) for i in range(len(inputs))]
        S = sum(G)
        eps = ridge * float(S.diagonal().mean()) or ridge
        T = sum(D[i] @ G[i] for i in range(len(inputs)))
        eye = torch.eye(S.shape[0], dtype=S.dtype, device=device)
        fused = torch.linalg.solve(S + eps * eye, T.T).T  # S symmetric: ΔW* = T (S + εI)⁻¹
        merged = factorize_dense(fused, keep, kernel)
        result.layers[name] = merged
        candidates = {"fusion": merged.update.delta().to(device, torch.float64), "fusion_exact": fused,
                      "weighted_sum": sum(D)}
        for i in range(len(inputs)):
            den[i] += _quadratic(D[i], G[i])
            for kind, M in candidates.items():
                num[kind][i] += _quadratic(D[i] - M, G[i])
    result.output_residuals = {k: [(max(n, 0.0) / d) ** 0.5 if d > 0 else 0.0 for n, d in zip(num[k], den)]
                               for k in kinds}
    result.output_norms = [d ** 0.5 for d in den]
    return result
