"""The D&C score (paper Algorithm 3, Fig. 14) and its similarity matrices."""

import itertools

import numpy as np
import pytest

from mudi.core.dnc import (
    dc_similarity,
    dnc_details,
    dnc_score,
    greedy_assignment,
    gt_similarity,
    hungarian_assignment,
    mean_cosine,
    similarity_matrix,
)

S_GT = [[0.78, 0.28], [0.28, 0.71]]


@pytest.mark.parametrize("s_dc, expected", [
    ([[0.72, 0.26], [0.29, 0.71]], 0.936),  # 1) good
    ([[0.64, 0.28], [0.32, 0.70]], 0.854),  # 2) slightly mixed
    ([[0.27, 0.74], [0.25, 0.71]], 0.313),  # 3) single type subject / severely mixed
])
def test_fig14_examples(s_dc, expected):
    assert dnc_score(S_GT, s_dc) == pytest.approx(expected, abs=0.005)


def test_fig14_count_error_is_zero():
    three = [[0.72, 0.26], [0.29, 0.71], [0.5, 0.5]]
    res = dnc_details(S_GT, three)
    assert res.score == 0.0 and res.failures == ["count"] and res.s_dc_matched is None
    assert dnc_score(S_GT, np.zeros((0, 2))) == 0.0
    assert dnc_score(S_GT, [[0.7, 0.3]]) == 0.0


def test_detection_order_does_not_matter():
    a = [[0.72, 0.26], [0.29, 0.71]]
    assert dnc_score(S_GT, a[::-1]) == pytest.approx(dnc_score(S_GT, a))
    assert dnc_details(S_GT, a[::-1]).assignment == [1, 0]


def test_spectral_is_largest_singular_value_and_frobenius_is_squared():
    dc = np.array([[0.64, 0.28], [0.32, 0.70]])
    d = np.asarray(S_GT) - dc
    sv = np.linalg.svd(d, compute_uv=False)
    assert dnc_score(S_GT, dc, norm="spectral") == pytest.approx(1 - sv[0])
    assert dnc_score(S_GT, dc, norm="frobenius") == pytest.approx(1 - (d ** 2).sum())
    with pytest.raises(ValueError, match="norm"):
        dnc_score(S_GT, dc, norm="l1")
    with pytest.raises(ValueError, match="matching"):
        dnc_score(S_GT, dc, matching="random")


def test_greedy_follows_algorithm3_column_by_column():
    # Column 0 takes row 1 (0.9); column 1 must then take row 0 (only one left) although row 1 is larger.
    s = np.array([[0.5, 0.2], [0.9, 0.8]])
    assert greedy_assignment(s) == [1, 0]
    # Ties go to the lower row.
    assert greedy_assignment(np.zeros((3, 3))) == [0, 1, 2]


def test_greedy_differs_from_hungarian_where_it_should():
    s = np.array([[0.9, 0.85], [0.8, 0.1]])  # greedy: col0→row0, col1→row1 (sum 1.0); optimal: 0.8+0.85
    assert greedy_assignment(s) == [0, 1]
    assert hungarian_assignment(s) == [1, 0]
    gt = np.array([[0.8, 0.3], [0.3, 0.8]])
    assert dnc_score(gt, s, matching="hungarian") != dnc_score(gt, s, matching="greedy")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_hungarian_is_optimal(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        s = rng.random((n, n))
        rows = hungarian_assignment(s)
        assert sorted(rows) == list(range(n))
        best = max(sum(s[p[j], j] for j in range(n)) for p in itertools.permutations(range(n)))
        assert sum(s[rows[j], j] for j in range(n)) == pytest.approx(best)


def test_similarity_matrices_are_mean_cosines():
    rng = np.random.default_rng(0)
    refs = [rng.normal(size=(k, 8)) for k in (3, 4, 2)]
    gt = gt_similarity(refs)
    assert gt.shape == (3, 3) and np.allclose(gt, gt.T)
    a = refs[0] / np.linalg.norm(refs[0], axis=1, keepdims=True)
    b = refs[1] / np.linalg.norm(refs[1], axis=1, keepdims=True)
    assert gt[0, 1] == pytest.approx((a @ b.T).mean())
    assert gt[2, 2] == pytest.approx(mean_cosine(refs[2], refs[2]))  # self-pairs included
    crops = rng.normal(size=(2, 8))
    dc = dc_similarity(crops, refs)
    assert dc.shape == (2, 3)
    assert dc[1, 2] == pytest.approx(mean_cosine(crops[1], refs[2]))
    assert dc_similarity(np.zeros((0, 8)), refs).shape == (0, 3)
    assert np.allclose(similarity_matrix(refs, refs), gt)
    # Scale does not matter (cosine).
    assert np.allclose(gt_similarity([r * 7 for r in refs]), gt)


def test_identical_detections_and_references_score_one():
    rng = np.random.default_rng(1)
    refs = [rng.normal(size=(3, 16)) for _ in range(3)]
    gt = gt_similarity(refs)
    assert dnc_score(gt, gt) == pytest.approx(1.0)
    assert dnc_score(gt, gt[[2, 0, 1]]) == pytest.approx(1.0)


def test_failure_flags():
    assert dnc_details(S_GT, [[0.72, 0.26], [0.29, 0.71]]).failures == []
    # Fig. 14 case 3: both detections resemble subject 2 → duplicate and mixed.
    assert dnc_details(S_GT, [[0.27, 0.74], [0.25, 0.71]]).failures == ["duplicate", "mixed"]
    # Mixed without duplicate: detection 1 resembles subject 0 much more than S_GT predicts.
    assert dnc_details(S_GT, [[0.78, 0.28], [0.50, 0.71]]).failures == ["mixed"]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="square"):
        dnc_score([[1.0, 0.2]], [[1.0, 0.2]])
    with pytest.raises(ValueError, match="one column per subject"):
        dnc_score(S_GT, [[1.0, 0.2, 0.1], [0.1, 0.2, 0.3]])


def test_fig14_duplicated_subject_with_fig4_ground_truth():
    """Fig. 14's "duplicated subject" panel (0.56) is reproduced with the S_GT of Fig. 4, whose second diagonal
    entry is 0.77 (the 0.71 printed in Fig. 14 gives 0.613); the other panels barely move with that entry."""
    s_gt = [[0.78, 0.28], [0.28, 0.77]]
    assert dnc_score(s_gt, [[0.72, 0.29], [0.52, 0.41]]) == pytest.approx(0.565, abs=0.005)
    assert dnc_score(s_gt, [[0.72, 0.26], [0.29, 0.71]]) == pytest.approx(0.933, abs=0.005)
    assert dnc_score(s_gt, [[0.27, 0.74], [0.25, 0.71]]) == pytest.approx(0.313, abs=0.005)
