"""benchmarks/toyworld_init_study.py --quick end to end (seconds): the init study's measurements are what they
claim to be (issue 24, item 4; docs/results/toyworld-init-study-2026-12-06.md)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("toyworld_init_study", ROOT / "benchmarks" / "toyworld_init_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("init_study")
    assert _study().main(["--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_first_step_coefficient_is_the_backbones_and_the_pipelines(quick_run):
    _, res = quick_run
    c = res["first_step"]["coefficients"]
    # read back from mudi's own init ((z - eps) / E(x_init)⊙M at γ 1) and from the pipeline's first timestep
    assert math.isclose(res["c_measured"], res["c_pipeline"], rel_tol=1e-4)
    assert 0.1 < res["c_measured"] < 0.5  # 6 quick steps: t0 = 831 on the cosine schedule, not ~0.06
    assert math.isclose(c["toy_30"], 0.0639, abs_tol=5e-4)  # the benchmark's 30 DDIM steps (t0 = 958)
    assert math.isclose(c["sdxl_50"], 0.0760, abs_tol=5e-4)  # SDXL's EulerDiscrete schedule, t0 = 981
    g2 = next(r for r in res["first_step"]["per_gamma"] if r["gamma"] == 2.0)
    rms = res["latent_stats"]["x_init_inside_mask"]["rms"]
    assert math.isclose(g2["toy_shift_rms"], 2.0 * c["toy_30"] * rms, rel_tol=1e-6)


def test_latent_stats_are_of_the_scaled_latents(quick_run):
    _, res = quick_run
    st = res["latent_stats"]
    from mudi.toyworld import MODEL_DIR

    shipped = json.loads((MODEL_DIR / "vae" / "config.json").read_text())["scaling_factor"]
    assert math.isclose(st["scaling_factor"], shipped, rel_tol=1e-6) and 0.5 < shipped < 0.9  # v1 0.697, v2 0.665
    # scaled latents are about unit variance over the world's images; unscaled ones would be ~1/0.67 = 1.5
    assert 0.85 < st["dataset_all"]["global_std"] < 1.15
    # x_init's subjects (saturated colours) sit far from unit RMS, the background inside it much nearer zero
    assert st["x_init_inside_mask"]["rms"] > 1.5 > st["x_init_outside_mask"]["rms"]
    white = st["plain_backgrounds"]["255,255,255"]["mean"]
    assert white[0] < -0.5  # the white background is not the zero latent ...
    assert all(150 < v < 240 for v in st["zero_latent_decodes_to_rgb"])  # ... zero decodes to a pale grey


def test_cells_sheet_and_report(quick_run):
    out, res = quick_run
    cells = res["cells"]
    assert [(c["gamma"], c["layout"]) for c in cells] == [(0.0, "authors"), (1.0, "authors"), (1.0, "apart_small")]
    for c in cells:
        assert len(c["corr_init_inside"]) == len(c["corr_final"]) == 6 == len(c["timesteps"])
        assert math.isclose(c["corr_final"][-1], 1.0, abs_tol=1e-6)  # the last x0-prediction is the final one
        assert c["summary"]["n"] == 4
        assert c["paired"]["won"] + c["paired"]["lost"] <= 4 and "white_bg" in c["aggregate"]["all"]
    # the init's x0-predictions carry x_init more than the plain sampler's do at the first step
    assert cells[1]["corr_init_inside"][0] > cells[0]["corr_init_inside"][0] + 0.2
    sheet = np.asarray(Image.open(out / "x0-sheet.png"))
    assert sheet.shape[1] == 2 * 5 * 34  # x_init, the x0-predictions of steps 0, 2, 5 (6 quick steps), the final
    assert "First-step signal" in (out / "results.md").read_text()
