"""The merge arithmetic on :class:`~mudi.merging.formats.LowRankUpdate` s (torch only, no model, no I/O).

- **weighted sum**: ``ΔW = Σ_i w_i s_i B_i A_i`` per layer — exactly what diffusers applies with
  ``set_adapters([...], adapter_weights=[w_1, ...])`` — written back at a chosen rank by a truncated SVD
  (computed on the factors: QR of ``[B_i]`` and ``[A_i]ᵀ``, then the SVD of the small ``R x R`` core, so the
  dense ``ΔW`` is never formed);
- **concatenation of ranks**: ``A = [√(w_i s_i) A_i]`` stacked, ``B = [√(w_i s_i) B_i]`` side by side: the same sum,
  exactly, at rank ``r_1 + r_2 + …``;
- :func:`factorize_dense`: the truncated SVD of a dense update (gradient fusion's, :mod:`mudi.merging.fusion`).

Every factorisation reports its residual ``‖ΔW - B'A'‖_F`` (from the dropped singular values) next to ``‖ΔW‖_F``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mudi.merging.formats import LoraUpdates, LowRankUpdate, update_from_matrices


@dataclass
class MergedLayer:
    """One layer of the merged LoRA: its update (scale 1), the norm of the exact merged update ``‖ΔW‖_F`` and the
    factorisation's residual ``‖ΔW - B'A'‖_F``."""

    update: LowRankUpdate
    norm: float
    residual: float

    @property
    def relative_residual(self) -> float:
        return self.residual / self.norm if self.norm > 0 else 0.0


def layer_names(inputs: Sequence[LoraUpdates]) -> list[str]:
    """Every layer any input has, in first-seen order."""
    return list(dict.fromkeys(name for u in inputs for name in u))


def kernel_of(inputs: Sequence[LoraUpdates], name: str) -> tuple[int, ...]:
    return next(u[name].kernel for u in inputs if name in u)


def stacked_factors(inputs: Sequence[LoraUpdates], weights: Sequence[float], name: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up (out, R), down (R, in))`` with ``up @ down = Σ_i w_i s_i B_i A_i`` for layer ``name`` (the square root
    of each coefficient on both sides; a negative one's sign on ``down``)."""
    ups, downs = [], []
    for u, w in zip(inputs, weights):
        if name not in u or w == 0:
            continue
        c = float(w) * u[name].scale
        root = abs(c) ** 0.5
        ups.append(u[name].up() * root)
        downs.append(u[name].down() * (root if c >= 0 else -root))
    if not ups:
        ref = next(u[name] for u in inputs if name in u)
        return ref.up()[:, :0], ref.down()[:0]
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


def concat_ranks(inputs: Sequence[LoraUpdates], weights: Sequence[float]) -> dict[str, MergedLayer]:
    """The weighted sum as one LoRA without loss: ranks stacked, ``r = Σ r_i`` per layer, residual 0."""
    out = {}
    for name in layer_names(inputs):
        up, down = stacked_factors(inputs, weights, name)
        norm = float(torch.linalg.matrix_norm(up.double() @ down.double()))
        out[name] = MergedLayer(update_from_matrices(up, down, kernel_of(inputs, name)), norm, 0.0)
    return out


def weighted_sum(inputs: Sequence[LoraUpdates], weights: Sequence[float], rank: int = 0) -> dict[str, MergedLayer]:
    """``Σ_i w_i s_i B_i A_i`` per layer, factorised by a truncated SVD at ``rank`` (0: ``Σ r_i``, exact)."""
    out = {}
    for name in layer_names(inputs):
        up, down = stacked_factors(inputs, weights, name)
        keep = rank if rank > 0 else up.shape[1]
        out[name] = factorize_low_rank(up, down, keep, kernel_of(inputs, name))
    return out


def factorize_low_rank(up: torch.Tensor, down: torch.Tensor, rank: int, kernel: tuple[int, ...] = ()) -> MergedLayer:
    """Truncated SVD of ``up @ down`` (``(out, R) @ (R, in)``) at ``rank`` without forming it: ``up = Q_u R_u``,
    ``downᵀ = Q_d R_d``, ``SVD(R_u R_dᵀ) = U S Vᵀ`` → singular vectors ``Q_u U`` and ``Q_d V`` (float64)."""
    u64, d64 = up.double(), down.double()
    if u64.shape[1] == 0:
        return _from_svd(u64[:, :0], torch.zeros(0, dtype=torch.float64), d64[:0], 0, kernel)
    q_u, r_u = torch.linalg.qr(u64)
    q_d, r_d = torch.linalg.qr(d64.T)
    U, S, Vh = torch.linalg.svd(r_u @ r_d.T)
    return _from_svd(q_u @ U, S, Vh @ q_d.T, rank, kernel)


def factorize_dense(delta: torch.Tensor, rank: int, kernel: tuple[int, ...] = ()) -> MergedLayer:
    """Truncated SVD of a dense update ``(out, in·kh·kw)`` at ``rank``."""
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return _from_svd(U, S, Vh, rank, kernel)


def _from_svd(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int, kernel: tuple[int, ...]) -> MergedLayer:
    k = max(0, min(int(rank), S.numel()))
    root = S[:k].sqrt()
    up = (U[:, :k] * root).to(torch.float32)
    down = (root[:, None] * Vh[:k]).to(torch.float32)
    norm = float(S.square().sum().sqrt())
    residual = float(S[k:].square().sum().sqrt())
    return MergedLayer(update_from_matrices(up, down, kernel), norm, residual)


def total_relative_residual(layers: dict[str, MergedLayer]) -> float:
    """``sqrt(Σ residual²) / sqrt(Σ norm²)`` over all layers: the factorisation's loss of the whole merged update."""
    num = sum(m.residual ** 2 for m in layers.values())
    den = sum(m.norm ** 2 for m in layers.values())
    return (num / den) ** 0.5 if den > 0 else 0.0
