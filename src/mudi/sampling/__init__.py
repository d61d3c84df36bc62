"""Sampling: MuDI's mean-shifted initial latents, LoRAs and the pipeline call (``mudi generate``, the trainer's
validation, the benchmark). Import the submodules: ``config``, ``init``, ``images``, ``loras``, ``folder``."""
