"""The toy world's verdicts over images and folders, and the Wilson interval of a success rate."""

import numpy as np
import pytest
from PIL import Image

from mudi.errors import MudiError
from mudi.toyworld import SUBJECTS_DIR
from mudi.toyworld.evaluate import (
    check_folder,
    judge_images,
    summarize_verdicts,
    wilson_interval,
)
from mudi.toyworld.world import DEMO_SUBJECTS, Scene, place_objects, render_scene


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)  # p = 0.5, n = 10
    lo, hi = wilson_interval(0, 32)
    assert lo == 0.0 and abs(hi - 0.1072) < 1e-3
    assert wilson_interval(0, 0) == (0.0, 1.0)
    s = summarize_verdicts(["correct", "missing", "correct", "blend"])
    assert s["successes"] == 2 and s["success_rate"] == 0.5 and s["verdicts"] == {"missing": 1, "blend": 1,
                                                                                  "correct": 2}


def _renders(seed: int, identities) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_scene(Scene(tuple(place_objects(rng, identities)), (255, 255, 255)))[0]


def test_ground_truth_renders_of_both_subjects_succeed_and_one_subject_is_missing(tmp_path):
    both = [(s.shape, s.top, s.bottom) for s in DEMO_SUBJECTS]
    names = [s.name for s in DEMO_SUBJECTS]
    images = [_renders(k, both) for k in range(6)]
    assert judge_images(images, DEMO_SUBJECTS) == judge_images(images, [SUBJECTS_DIR / n for n in names])
    assert judge_images(images, names).count("correct") >= 5  # the checker's calibration: ≈ 0.98 on pairs
    one = [_renders(k, both[:1]) for k in range(3)]
    assert judge_images(one, names) == ["missing"] * 3
    twice = [_renders(k, [both[0], both[0]]) for k in range(3)]
    assert judge_images(twice, names).count("duplicate") >= 2
    for k, im in enumerate(images[:2] + one[:1]):
        Image.fromarray(im).save(tmp_path / f"{k:04d}_seed{k}.png")
    (tmp_path / "init").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "init" / "0000_seed0.png")  # never judged
    result = check_folder(tmp_path, names, tmp_path / "eval")  # names: the shipped subjects of those names
    assert result["n"] == 3 and result["images"]["0002_seed2.png"] == "missing"
    assert result["identities"] == {"red_yellow_square": "red yellow square", "blue_yellow_square": "blue yellow square"}
    with pytest.raises(MudiError, match="no subject folder found"):
        check_folder(tmp_path, ["dog6", names[0]], tmp_path / "eval")
