"""Detect-and-Compare (D&C), the multi-subject fidelity score of MuDI (paper Sec. 4.3, Fig. 4, Algorithm 3).

Given the embeddings of the reference photos of ``N`` subjects and of the ``M`` subjects detected in a
generated image:

- ``S_GT[i, j]`` = mean cosine similarity between the reference photos of subjects ``i`` and ``j``
  (all pairs, self-pairs included on the diagonal);
- ``S_DC[k, j]`` = mean cosine similarity between detected crop ``k`` and the reference photos of ``j``;
- if ``M != N`` the score is 0 (count error); otherwise the rows of ``S_DC`` are matched to the subjects
  (Algorithm 3: greedily, column by column, each column taking the remaining row with the largest
  value) and ``score = 1 - ||S_GT - S_DC||``.

The paper's text writes a squared Frobenius norm, but its published numbers (Fig. 14) are reproduced by
the authors' implementation, which takes the **spectral** norm (largest singular value): that is the
default here; ``norm="frobenius"`` is the formula as printed. The score is not clipped: a badly mixed image
can score below 0.

Pure numpy; embeddings may be numpy arrays or CPU torch tensors (anything ``np.asarray`` accepts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Norm = Literal["spectral", "frobenius"]
Matching = Literal["greedy", "hungarian"]
NORMS = ("spectral", "frobenius")
MATCHINGS = ("greedy", "hungarian")


def _as_2d(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (n, D) array of embeddings, got shape {arr.shape}")
    return arr


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def mean_cosine(a, b) -> float:
    """Mean cosine similarity over all pairs of rows of ``a (n, D)`` and ``b (m, D)``."""
    a, b = _l2_normalize(_as_2d(a, "a")), _l2_normalize(_as_2d(b, "b"))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return float((a @ b.T).mean())


def similarity_matrix(rows: Sequence, cols: Sequence) -> np.ndarray:
    """``S[i, j] = mean_cosine(rows[i], cols[j])``; each entry of ``rows``/``cols`` is an ``(n, D)`` set
    of embeddings (or one ``(D,)`` embedding). Returns ``(len(rows), len(cols))`` float64."""
    rs = [_l2_normalize(_as_2d(r, f"rows[{i}]")) for i, r in enumerate(rows)]
    cs = [_l2_normalize(_as_2d(c, f"cols[{j}]")) for j, c in enumerate(cols)]
    out = np.zeros((len(rs), len(cs)), dtype=np.float64)
    for i, r in enumerate(rs):
        for j, c in enumerate(cs):
            if r.shape[1] != c.shape[1]:
                raise ValueError(f"embedding sizes differ: rows[{i}] has {r.shape[1]}, cols[{j}] has {c.shape[1]}")
            out[i, j] = float((r @ c.T).mean())
    return out


def gt_similarity(reference_embeddings: Sequence) -> np.ndarray:
    """``S_GT (N, N)``: mean cosine similarity between the reference sets of every pair of subjects
    (Algorithm 3 line 7; computed once per subject set)."""
    return similarity_matrix(reference_embeddings, reference_embeddings)


def dc_similarity(crop_embeddings, reference_embeddings: Sequence) -> np.ndarray:
    """``S_DC (M, N)``: row ``k`` is detected crop ``k`` (``crop_embeddings (M, D)``), column ``j`` the mean
    cosine similarity to subject ``j``'s reference set (Algorithm 3 line 8). ``M`` may be 0."""
    crops = np.asarray(crop_embeddings, dtype=np.float64)
    if crops.size == 0:
        return np.zeros((0, len(reference_embeddings)), dtype=np.float64)
    crops = _as_2d(crops, "crop_embeddings")
    return similarity_matrix(list(crops), reference_embeddings)


def greedy_assignment(s_dc: np.ndarray) -> list[int]:
    """Algorithm 3 line 12: for column ``j = 0, 1, …`` take the not yet used row with the largest
    ``S_DC[row, j]`` (ties: the lower row). Returns ``rows[j]``, the row matched to subject ``j``."""
    s = np.asarray(s_dc, dtype=np.float64)
    free = list(range(s.shape[0]))
    rows = []
    for j in range(s.shape[1]):
        best = max(free, key=lambda r: (s[r, j], -r))
        rows.append(best)
        free.remove(best)
    return rows


def hungarian_assignment(s_dc: np.ndarray) -> list[int]:
    """Optimal assignment of rows to columns maximising ``sum_j S_DC[rows[j], j]`` (square input).

    The O(n^3) Hungarian method with potentials (Kuhn–Munkres, as in e.g. e-maxx), pure numpy/Python.
    """
    s = np.asarray(s_dc, dtype=np.float64)
    n = s.shape[0]
    if s.shape != (n, n):
        raise ValueError(f"hungarian_assignment needs a square matrix, got {s.shape}")
    cost = -s  # maximise similarity = minimise its negative
    inf = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    p = np.zeros(n + 1, dtype=int)  # p[col] = row matched to col (1-based, 0 = none)
    way = np.zeros(n + 1, dtype=int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(n + 1, inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            delta, j1 = inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    return [int(p[j]) - 1 for j in range(1, n + 1)]


def matrix_norm(d: np.ndarray, norm: Norm = "spectral") -> float:
    """``"spectral"``: largest singular value (the authors' implementation); ``"frobenius"``: the squared
    Frobenius norm, as the paper's text prints it."""
    if norm == "spectral":
        return float(np.linalg.norm(d, 2))
    if norm == "frobenius":
        return float(np.sum(d * d))
    raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")


@dataclass
class DncResult:
    """Everything one D&C evaluation found, for reports.

    - ``score``: the D&C score (0 on a count error).
    - ``s_dc_matched``: ``(N, N)`` rows of S_DC reordered so row ``j`` is the detection matched to subject
      ``j`` (``None`` on a count error).
    - ``assignment``: ``assignment[j]`` = index of the detection matched to subject ``j``.
    - ``failures``: ``"count"`` (detections != subjects), ``"duplicate"`` (two detections are each most
      similar to the same subject), ``"mixed"`` (an off-diagonal entry of the matched S_DC exceeds S_GT's
      by more than ``mixed_margin``: a detection resembles another subject more than the references do).
    """

    score: float
    num_detections: int
    num_subjects: int
    s_dc_matched: np.ndarray | None
    assignment: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def dnc_details(s_gt, s_dc, norm: Norm = "spectral", matching: Matching = "greedy",
                mixed_margin: float = 0.1) -> DncResult:
    """The D&C score of Algorithm 3 with the matching and failure flags used to reach it.

    ``s_gt``: ``(N, N)``; ``s_dc``: ``(M, N)`` (``M`` detections, any order).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if matching not in MATCHINGS:
        raise ValueError(f"matching must be one of {list(MATCHINGS)}, got {matching!r}")
    gt = np.asarray(s_gt, dtype=np.float64)
    n = gt.shape[0] if gt.ndim == 2 else -1
    if gt.ndim != 2 or gt.shape != (n, n) or n == 0:
        raise ValueError(f"s_gt must be a square (N, N) matrix, got shape {gt.shape}")
    dc = np.asarray(s_dc, dtype=np.float64)
    if dc.size == 0:
        dc = dc.reshape(0, n)
    if dc.ndim != 2 or dc.shape[1] != n:
        raise ValueError(f"s_dc must be (M, {n}) (one column per subject), got shape {dc.shape}")
    m = dc.shape[0]
    if m != n:
        return DncResult(0.0, m, n, None, [], ["count"])
    rows = greedy_assignment(dc) if matching == "greedy" else hungarian_assignment(dc)
    matched = dc[rows]
    score = 1.0 - matrix_norm(gt - matched, norm)
    failures = []
    best = dc.argmax(axis=1)
    if n > 1 and len(set(best.tolist())) < n:
        failures.append("duplicate")
    off = ~np.eye(n, dtype=bool)
    if n > 1 and float((matched - gt)[off].max()) > mixed_margin:
        failures.append("mixed")
    return DncResult(score, m, n, matched, rows, failures)


def dnc_score(s_gt, s_dc, norm: Norm = "spectral", matching: Matching = "greedy") -> float:
    """The D&C score ``1 - ||S_GT - S_DC||`` after matching detections to subjects; 0 when the number of
    detections (rows of ``s_dc``) differs from the number of subjects.

    >>> round(dnc_score([[0.78, 0.28], [0.28, 0.71]], [[0.72, 0.26], [0.29, 0.71]]), 3)
    0.936
    """
    return dnc_details(s_gt, s_dc, norm=norm, matching=matching).score
