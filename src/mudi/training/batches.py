"""The trainer's micro-batches: drawn from a random generator seeded per (run seed, process, index), so a
resumed run and a DataLoader worker draw exactly what the uninterrupted in-process run draws."""

from __future__ import annotations

import numpy as np
import torch

from mudi.training.buckets import draw_bucketed
from mudi.training.config import TrainConfig
from mudi.training.data import SampleSource


def draw_micro_batch(instances: SampleSource, priors: SampleSource | None, subjects: list, config: TrainConfig,
                     rng: np.random.Generator, step: int) -> dict[str, list]:
    """One micro-batch drawn from ``rng`` (what :class:`BatchDataset` workers call too)."""
    allow = step >= config.segmix_start_step
    if config.aspect_buckets:  # one size per micro-batch: the first sample picks the bucket
        inst = draw_bucketed(instances, rng, allow, config.train_batch_size)
    else:
        inst = [instances.draw(rng, allow) for _ in range(config.train_batch_size)]
    prior = [priors.draw_prior(rng, s, subjects[s.subject].class_name) for s in inst] if priors is not None else []
    return {"instance": inst, "prior": prior}


class BatchDataset(torch.utils.data.Dataset):
    """Micro-batch ``i`` (drawn with the trainer's ``batch_rng(i)``, process ``rank``), for DataLoader worker processes that
    compose Seg-Mix samples while the GPU trains (``dataloader_num_workers``)."""

    def __init__(self, instances: SampleSource, priors: SampleSource | None, subjects: list, config: TrainConfig,
                 rank: int, start: int, stop: int) -> None:
        self.instances, self.priors, self.subjects = instances, priors, subjects
        self.config, self.rank, self.start, self.stop = config, rank, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, k: int) -> dict[str, list]:
        index = self.start + k
        rng = np.random.default_rng([self.config.seed, self.rank, index])
        return draw_micro_batch(self.instances, self.priors, self.subjects, self.config, rng,
                                index // self.config.gradient_accumulation_steps)
