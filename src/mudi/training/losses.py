"""The training objective of ``mudi train``, term by term (paper Sec. 4.1, Appendix A.1, C.2, C.3).

With ``ε̂`` the denoiser's prediction of the family's target ``y`` (noise, ``v`` or the flow velocity) at a random
timestep, for ``N`` instance samples (Seg-Mix compositions or single-subject photos) and their prior samples:

- instance term, DreamBooth's reconstruction loss: ``L_inst = E ‖ε̂(z_t, c) − y‖²`` (Ruiz et al. 2023, Eq. 1);
  with ``soft_alpha < 1`` each latent pixel is weighted by ``w = α + (1 − α)·mask`` (the subjects count fully,
  the background by ``α``);
- prior preservation (Ruiz et al. 2023, Eq. 2): ``+ λ · E ‖ε̂(z'_t, c_pr) − y'‖²`` over the prior samples,
  ``λ = prior_loss_weight``;
- ``loss: dco`` (Direct Consistency Optimization, Lee et al. 2024, as the authors' released script): the
  instance term becomes ``mean(−log σ(−β (L_θ − L_ref)))``, with ``L_θ`` and ``L_ref`` each sample's (weighted)
  MSE under the LoRA model and under the base model on the same noisy input (prior samples keep ``λ·MSE``;
  mudi's definition of the combination, docs/differences.md);
- KL regularization (modular customization and iterative training, Appendix C.2, C.3):
  ``+ β_KL · E ‖ε̂_LoRA − ε̂_base‖²`` over every sample, ``β_KL = kl_weight``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``(B,)``: each sample's mean squared error, each pixel weighted by ``weight`` ``(B, 1, h, w)`` if given."""
    err = (pred - target) ** 2
    if weight is not None:
        err = err * weight
    return err.flatten(1).mean(dim=1)


def dco_loss(l_theta: torch.Tensor, l_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """Direct Consistency Optimization: ``mean(-log σ(-β (L_θ - L_ref)))`` over the samples."""
    return -F.logsigmoid(-beta * (l_theta - l_ref)).mean()


def mask_weights(masks: list[np.ndarray | None], resolution: int, latent_hw: tuple[int, int], soft_alpha: float,
                 device: Any) -> torch.Tensor | None:
    """``(B, 1, h, w)`` per-pixel loss weights ``α + (1 − α)·mask``: each sample's mask bilinearly downsampled to
    the latent grid; samples without a mask get ones. None when ``soft_alpha`` is 1 (no weighting)."""
    if soft_alpha >= 1:
        return None
    hw = next((m.shape for m in masks if m is not None), (resolution, resolution))  # a bucket's size, or R×R
    stacked = np.stack([m if m is not None else np.ones(hw, bool) for m in masks])
    m = torch.from_numpy(stacked.astype(np.float32))[:, None]
    m = F.interpolate(m, size=latent_hw, mode="bilinear", align_corners=False)
    return (m * (1 - soft_alpha) + soft_alpha).to(device)


def training_loss(pred: torch.Tensor, target: torch.Tensor, ref: torch.Tensor | None, weight: torch.Tensor | None,
                  num_instance: int, config: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch (the first ``num_instance`` rows are instance samples, the rest their prior
    samples) and its terms as floats: ``instance_loss``, ``prior_loss``, ``kl_loss`` (when they apply).
    ``ref`` is the base model's prediction (needed for ``loss: dco`` and ``kl_weight > 0``)."""
    n, c = num_instance, config
    w_inst = weight[:n] if weight is not None else None
    if c.loss == "dco":
        l_theta = per_sample_mse(pred[:n], target[:n], w_inst)
        l_ref = per_sample_mse(ref[:n], target[:n], w_inst)
        inst_loss = dco_loss(l_theta, l_ref, c.dco_beta)
    elif weight is None:
        inst_loss = F.mse_loss(pred[:n], target[:n])
    else:
        inst_loss = per_sample_mse(pred[:n], target[:n], w_inst).mean()
    loss = inst_loss
    terms = {"instance_loss": float(inst_loss.detach())}
    if pred.shape[0] > n:
        if weight is None:
            prior_loss = F.mse_loss(pred[n:], target[n:])
        else:
            prior_loss = per_sample_mse(pred[n:], target[n:], weight[n:]).mean()
        loss = loss + c.prior_loss_weight * prior_loss
        terms["prior_loss"] = float(prior_loss.detach())
    if c.kl_weight > 0:
        kl = F.mse_loss(pred, ref)
        loss = loss + c.kl_weight * kl
        terms["kl_loss"] = float(kl.detach())
    return loss, terms
