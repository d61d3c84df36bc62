"""Mean-shifted initial latents (paper Sec. 4.2, Algorithm 2): exact numbers and invariants."""

import math

import numpy as np
import pytest
import torch

from mudi.core.init_latents import (
    default_gamma,
    forward_noised_latents,
    image_to_pixels,
    mask_to_latent_grid,
    masked_correlation,
    mean_shifted_latents,
    snr_matched_coefficient,
)
from mudi.errors import MudiError


def _sdxl_alphas_cumprod() -> torch.Tensor:
    """SDXL's training schedule ("scaled_linear", 0.00085 .. 0.012, 1000 steps), computed here by hand."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def _setup(seed=0, shape=(1, 4, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=g)
    pix = np.zeros((128, 128), dtype=bool)
    pix[16:112, 8:72] = True  # -> latent cells rows 2..13, cols 1..8 at f = 8
    mask = mask_to_latent_grid(pix, shape[2:])
    return latents, mask


def test_default_gamma_is_algorithm_2s_for_two_subjects_and_b9s_beyond():
    # two subjects: Algorithm 2's gamma=1.0 (the paper's main results); 3 and more: Appendix B.9's 2 and 3
    assert [default_gamma(n) for n in (1, 2, 3, 4, 5)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(MudiError):
        default_gamma(0)


def test_mask_to_latent_grid_area_average_and_threshold():
    pix = np.zeros((32, 32), dtype=bool)
    pix[:16, :16] = True       # exactly the top-left 2x2 latent cells at f = 8
    pix[16:20, 16:24] = True   # half of cell (2, 2): kept at threshold 0.5
    pix[24:26, 24:32] = True   # a quarter of cell (3, 3): dropped
    soft = mask_to_latent_grid(pix, (4, 4), threshold=None)
    assert soft.shape == (1, 1, 4, 4)
    assert soft[0, 0, 0, 0] == 1 and soft[0, 0, 2, 2] == 0.5 and soft[0, 0, 3, 3] == 0.25
    hard = mask_to_latent_grid(pix, (4, 4))
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1
    expected[2, 2] = 1
    assert torch.equal(hard[0, 0], expected)
    batch = mask_to_latent_grid(np.stack([pix, ~pix]), (4, 4))
    assert batch.shape == (2, 1, 4, 4) and torch.equal(batch[1, 0], 1 - (soft[0, 0] > 0.75).float())


def test_gamma_zero_is_exactly_the_noise():
    noise, mask = _setup()
    init = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    out = mean_shifted_latents(noise, init, mask, 0.0, 0.068)
    assert out is noise


def test_shift_is_exact_inside_and_absent_outside():
    noise, mask = _setup()
    init = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    z = mean_shifted_latents(noise, init, mask, 2.0, 0.0681)
    inside = mask.expand_as(z) > 0
    assert torch.equal(z[~inside], noise[~inside])
    torch.testing.assert_close(z[inside] - noise[inside], 2.0 * 0.0681 * init[inside], rtol=1e-5, atol=1e-6)


def test_rejects_negative_gamma_and_shape_mismatch():
    noise, mask = _setup()
    with pytest.raises(MudiError, match="gamma"):
        mean_shifted_latents(noise, noise, mask, -1.0, 0.07)
    with pytest.raises(ValueError, match="do not match"):
        mean_shifted_latents(noise, noise[:, :3], mask, 1.0, 0.07)


def test_correlation_grows_with_gamma_and_is_zero_outside_in_expectation():
    """Latent-level effect: corr(z, E⊙M) inside M grows monotonically with γ; outside M, z is pure
    noise and its correlation with E averages to zero over noise draws."""
    _, mask = _setup()
    init = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(123))  # E(x_init) for 4 images
    coef = snr_matched_coefficient(float(_sdxl_alphas_cumprod()[999]))
    gammas = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 8.0]
    inside_means, outside = [], []
    for seed in range(16):
        noise = torch.randn(init.shape, generator=torch.Generator().manual_seed(1000 + seed))
        row = []
        for gamma in gammas:
            z = mean_shifted_latents(noise, init, mask, gamma, coef)
            row.append(masked_correlation(z, init * mask, mask))
            if gamma == 2.0:
                outside.append(masked_correlation(z, init, mask, inside=False))
        assert all(b > a for a, b in zip(row, row[1:])), row  # monotone for every draw
        inside_means.append(row)
    means = np.mean(inside_means, axis=0)
    assert abs(means[0]) < 0.03 and means[-1] > 0.4
    n_out = int((mask <= 0.5).sum()) * 4 * 4
    assert abs(np.mean(outside)) < 3 / math.sqrt(n_out * 16)  # 3 standard errors of a null correlation


def test_unit_noise_convention_matches_algorithm_2_within_the_dropped_factor():
    acp = _sdxl_alphas_cumprod()
    ab = float(acp[999])
    assert math.sqrt(ab) == pytest.approx(0.068, abs=0.001)  # the "0.07·γ shift" of the issue
    noise, mask = _setup()
    init = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    ours = mean_shifted_latents(noise, init, mask, 2.0, math.sqrt(ab))
    alg2 = forward_noised_latents(noise, 2.0 * init * mask, ab)
    diff = ours - alg2
    torch.testing.assert_close(diff, (1 - math.sqrt(1 - ab)) * noise, rtol=1e-4, atol=1e-6)
    assert (1 - math.sqrt(1 - ab)) < 0.003


def test_snr_matched_coefficient():
    ab = 0.0046
    c = snr_matched_coefficient(ab)
    assert c ** 2 == pytest.approx(ab / (1 - ab))
    assert snr_matched_coefficient(0.0) == 0.0
    with pytest.raises(ValueError):
        snr_matched_coefficient(1.0)


def test_image_to_pixels_range_and_layout():
    img = np.zeros((4, 6, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 128)
    px = image_to_pixels(img)
    assert px.shape == (1, 3, 4, 6) and px.dtype == torch.float32
    assert px[0, :, 0, 0].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    assert px[0, :, 1, 1].tolist() == [-1.0, -1.0, -1.0]
