"""Mean-shifted initial latents (paper Sec. 4.2, Algorithm 2, Appendix B.3, B.9).

MuDI starts the sampler from Gaussian noise whose mean is shifted towards ``x_init``, a Seg-Mix composition
of the subjects' segmented reference images:

    z_T = gamma * (E(x_init) ⊙ Resize(M_init)) + eps                                  (Sec. 4.2)

Algorithm 2 realises it as the scheduler's forward noising (img2img at strength 1) of ``gamma * E ⊙ M`` to the
first timestep ``t0``. At unit variance that is ``sqrt(ᾱ_t0) * gamma * E ⊙ M + sqrt(1 - ᾱ_t0) * eps``; for
SDXL's default scheduler ``sqrt(ᾱ_t0) ≈ 0.068``, i.e. the "0.07·γ shift" that makes γ ≈ 1–3 useful and γ > 4
saturate (Appendix B.3).

Convention used here (``mean_shifted_latents``)::

    z = eps + gamma * c * (E(x_init) ⊙ M↓)         with c = backbone.first_step_signal_coefficient(steps)

The noise term is kept at unit scale: the factor ``sqrt(1 - ᾱ_t0)`` (0.9977 for SDXL) is dropped, so that
``gamma = 0`` gives *exactly* the plain pipeline's noise (bit-identical images), and the mean shift equals
Algorithm 2's to within 0.3 %. The result is "unit-variance unpacked latents": the backbone's
``to_pipeline_latents`` turns them into what the pipeline's ``latents=`` expects (SD/SDXL multiply by
``scheduler.init_noise_sigma``; FLUX packs them and does not scale). Flow-matching families (FLUX) have a
first sigma of 1, so true forward noising would erase the shift; their backbone returns a coefficient that
matches SDXL's first-step signal-to-noise ratio instead (see docs/generate.md).

Pure torch/numpy: no diffusers here. Shapes: latents ``(B, C, h, w)``, latent masks ``(B or 1, 1, h, w)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mudi.errors import MudiError

#: γ behind the paper's two-subject results: Algorithm 2's default ``gamma=1.0`` (Appendix A.1); Figure 27
#: labels MuDI "γ = 1". (Sec. 4.2 and B.3 give no other two-subject value.)
GAMMA_TWO_SUBJECTS = 1.0
#: γ of the N-subject study (Appendix B.9): 2 for two or three subjects, 3 for more than three. B.9 is the only
#: source for three or more subjects, so its values apply there (and to the study's own two-subject cell).
GAMMA_THREE_SUBJECTS = 2.0
GAMMA_MANY_SUBJECTS = 3.0
#: Above this γ the paper observes saturated images with the layout of x_init frozen (Appendix B.3).
GAMMA_SATURATION = 4.0


def default_gamma(num_subjects: int) -> float:
    """The paper's γ: 1 for one or two subjects (Algorithm 2, the main results), Appendix B.9's for more.

    >>> default_gamma(2), default_gamma(3), default_gamma(4)
    (1.0, 2.0, 3.0)
    """
    if num_subjects < 1:
        raise MudiError(f"default_gamma needs at least one subject, got {num_subjects}")
    return GAMMA_TWO_SUBJECTS if num_subjects <= 2 else appendix_b9_gamma(num_subjects)


def appendix_b9_gamma(num_subjects: int) -> float:
    """γ of the N-subject study (Appendix B.9): 2 for two or three subjects, 3 for more than three.

    >>> appendix_b9_gamma(2), appendix_b9_gamma(3), appendix_b9_gamma(5)
    (2.0, 2.0, 3.0)
    """
    if num_subjects < 1:
        raise MudiError(f"appendix_b9_gamma needs at least one subject, got {num_subjects}")
    return GAMMA_THREE_SUBJECTS if num_subjects <= 3 else GAMMA_MANY_SUBJECTS


def image_to_pixels(image: np.ndarray, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB → ``(1, 3, H, W)`` float in [-1, 1] (what VAE encoders take)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_to_pixels needs (H, W, 3) uint8, got {image.shape} {image.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(torch.float32)
    return (t / 127.5 - 1.0).to(device=device, dtype=dtype)


def mask_to_latent_grid(mask: np.ndarray | torch.Tensor, latent_hw: tuple[int, int], threshold: float = 0.5,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize a pixel mask to the latent grid: ``Resize(M_init)`` of Sec. 4.2.

    ``mask``: ``(H, W)`` or ``(B, H, W)`` bool. Each latent cell takes the fraction of its pixels on a subject
    (area averaging, exact when ``H``/``W`` are multiples of ``h``/``w``); cells with a fraction
    ``>= threshold`` are 1, the others 0. ``threshold=None`` keeps the soft fractions.
    Returns ``(B, 1, h, w)`` (``B = 1`` for a 2-D mask) in ``dtype`` on ``device``.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"mask_to_latent_grid needs an (H, W) or (B, H, W) mask, got shape {tuple(m.shape)}")
    h, w = latent_hw
    if h < 1 or w < 1 or h > m.shape[1] or w > m.shape[2]:
        raise ValueError(f"latent grid {h}x{w} must be between 1x1 and the mask's {m.shape[1]}x{m.shape[2]}")
    frac = F.interpolate(m[:, None].to(torch.float32), size=(h, w), mode="area")
    out = frac if threshold is None else (frac >= threshold).to(torch.float32)
    return out.to(device=device, dtype=dtype)


def mean_shifted_latents(noise: torch.Tensor, init_latents: torch.Tensor, latent_mask: torch.Tensor,
                         gamma: float, signal_coefficient: float) -> torch.Tensor:
    """``z = noise + gamma * signal_coefficient * init_latents * latent_mask`` (Sec. 4.2, Algorithm 2).

    - ``noise``: ``(B, C, h, w)`` unit Gaussian, drawn exactly as the pipeline would draw it.
    - ``init_latents``: ``(B or 1, C, h, w)`` ``E(x_init)`` in the denoiser's space (scaled and shifted).
    - ``latent_mask``: ``(B or 1, 1, h, w)`` from :func:`mask_to_latent_grid`.
    - ``signal_coefficient``: ``sqrt(ᾱ_t0)`` for DDPM-type schedulers (the survival of a clean latent at the
      first step), or the flow-matching equivalent; see the module docstring.

    ``gamma == 0`` returns ``noise`` itself, so the plain pipeline is reproduced exactly.
    """
    if not math.isfinite(gamma) or gamma < 0:
        raise MudiError(f"gamma {gamma} must be a finite number >= 0 (the paper uses 1-3; 0 disables the init)")
    if gamma == 0:
        return noise
    if init_latents.ndim != 4 or latent_mask.ndim != 4 or latent_mask.shape[1] != 1:
        raise ValueError(f"init_latents must be (B, C, h, w) and latent_mask (B, 1, h, w), got "
                         f"{tuple(init_latents.shape)} and {tuple(latent_mask.shape)}")
    if init_latents.shape[1:] != noise.shape[1:] or latent_mask.shape[2:] != noise.shape[2:]:
        raise ValueError(f"init latents {tuple(init_latents.shape)} / mask {tuple(latent_mask.shape)} do not match "
                         f"the noise {tuple(noise.shape)}")
    shift = (gamma * signal_coefficient) * init_latents.to(noise) * latent_mask.to(noise)
    return noise + shift


def forward_noised_latents(noise: torch.Tensor, clean: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """Algorithm 2's literal form at unit variance: ``sqrt(ᾱ) * clean + sqrt(1 - ᾱ) * noise``.

    Kept for comparison (tests, docs): :func:`mean_shifted_latents` equals it with ``clean = gamma * E ⊙ M``
    up to the noise factor ``sqrt(1 - ᾱ)``, which it drops so that ``gamma = 0`` is exactly the plain noise.
    """
    if not 0 <= alpha_bar <= 1:
        raise ValueError(f"alpha_bar {alpha_bar} must be in [0, 1]")
    return math.sqrt(alpha_bar) * clean + math.sqrt(1 - alpha_bar) * noise


def snr_matched_coefficient(alpha_bar: float) -> float:
    """The unit-noise signal coefficient with the same first-step signal-to-noise ratio as ``ᾱ``.

    For ``x = c * x0 + eps`` the SNR is ``c**2``; for forward noising it is ``ᾱ / (1 - ᾱ)``. So
    ``c = sqrt(ᾱ / (1 - ᾱ))`` (0.0682 for SDXL's ``sqrt(ᾱ) = 0.0681``). This is how a flow-matching family,
    whose first sigma of 1 leaves no signal, can get an equivalent mean shift.
    """
    if not 0 <= alpha_bar < 1:
        raise ValueError(f"alpha_bar {alpha_bar} must be in [0, 1)")
    return math.sqrt(alpha_bar / (1 - alpha_bar))


def masked_correlation(latents: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                       inside: bool = True) -> float:
    """Pearson correlation between ``latents`` and ``reference`` over the cells where ``mask`` is (not) set.

    ``latents``: ``(B, C, h, w)``; ``reference``: broadcastable to it (e.g. ``E(x_init) ⊙ M``); ``mask``:
    ``(B or 1, 1, h, w)``. Used to measure how strongly the initial latents carry the composition.
    """
    ref = torch.broadcast_to(reference, latents.shape).to(torch.float64)
    sel = torch.broadcast_to(mask > 0.5 if inside else mask <= 0.5, latents.shape)
    a, b = latents.to(torch.float64)[sel], ref[sel]
    if a.numel() < 2:
        raise ValueError("masked_correlation: fewer than two latent cells selected")
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else 0.0
