"""The training run: build a :class:`~mudi.training.trainer.LoraTrainer`, loop over steps with checkpoints,
validation and a progress bar, and write the outputs (``mudi train``, the benchmark, ``mudi run``)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from mudi.config import to_dict
from mudi.devices import describe
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, write_text_atomic
from mudi.training.checkpoint import remove_stale_temporaries
from mudi.training.config import TrainConfig
from mudi.training.runs import HISTORY_FILE, guard_output_dir, record_history, write_run_config
from mudi.training.signals import StopRequest, TrainingStopped
from mudi.training.trackers import init_trackers, log_validation_images
from mudi.training.trainer import LoraTrainer, batch_loader

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


def is_main_process() -> bool:
    """Rank 0 of ``accelerate launch`` / ``torchrun`` (or a plain process)."""
    return int(os.environ.get("RANK", "0")) == 0


def train(config: TrainConfig, backbone: Backbone | None = None, callback: Any = None, validation_fn: Any = None) -> LoraTrainer:
    """Train and write the outputs; returns the trainer (its ``global_step``, ``backbone``, …).

    Before any model loads: the output folder is created, checked (writable, free space) and locked, and a
    folder holding another run is refused (:func:`mudi.training.runs.guard_output_dir`). ``callback(trainer,
    batch, losses)`` is called after every step (tests use it to inspect batches). SIGINT / SIGTERM stop the
    run at the next step boundary with a checkpoint (:mod:`mudi.training.signals`).
    """
    lock = None
    if is_main_process():
        prepare_output_dir(config.output_dir, "training output folder")
        lock = OutputLock(config.output_dir, "training run").acquire()
    try:
        if is_main_process():
            guard_output_dir(config)
            remove_stale_temporaries(config.output_dir)
        with StopRequest() as stop:
            return _train(config, backbone, callback, validation_fn, stop)
    finally:
        if lock is not None:
            lock.release()


def _train(config: TrainConfig, backbone: Backbone, callback: Any, validation_fn: Any, stop: StopRequest) -> LoraTrainer:
    trainer = LoraTrainer(config, backbone=backbone)
    c, acc = trainer.config, trainer.accelerator  # the config with `auto` resolved
    if acc.is_main_process:
        log.info("mudi train: %s, %s (mixed precision %s)", trainer.backbone.family,
                 describe(acc.device, trainer.weight_dtype), c.mixed_precision)
    changes = trainer.resume(c.resume_from_checkpoint) if c.resume_from_checkpoint else {}
    if acc.is_main_process:
        write_run_config(trainer.output_dir, c)  # the run's original config, never overwritten
        record_history(trainer.output_dir, "resume" if trainer.global_step else "start", trainer.global_step,
                       changes)
        metrics = MetricsLog(trainer.output_dir / METRICS_FILE, trainer.global_step)
        if changes:
            log.info("resuming with %s (recorded in %s)", ", ".join(f"{k} {v[0]!r} → {v[1]!r}"
                                                                   for k, v in changes.items()), HISTORY_FILE)
    if acc.is_main_process:
        init_trackers(acc, c.report_to, trainer.output_dir, {k: v for k, v in _flat(to_dict(c)).items()
                                                              if isinstance(v, (int, float, str, bool))})
    if c.cache_latents:
        n = trainer.fill_latent_cache()
        log.info("cached the VAE posteriors of %d photo(s) whose pixels never change", n)
    loader = batch_loader(trainer) if c.dataloader_num_workers > 0 else None
    bar = tqdm(total=c.max_train_steps, initial=trainer.global_step, desc=f"train {trainer.backbone.family}",
               unit="step", disable=not (c.progress and acc.is_local_main_process))
    OOM = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", RuntimeError))
    try:
        while trainer.global_step < c.max_train_steps and not stop.requested:
            t0 = time.perf_counter()
            batches = [next(loader) for _ in range(c.gradient_accumulation_steps)] if loader is not None else None
            data_seconds = time.perf_counter() - t0
            batches, losses = trainer.step(batches)
            trainer.global_step += 1
            if not math.isfinite(losses["loss"]):
                bar.close()
                raise MudiError(
                    f"the loss became {losses['loss']} at step {trainer.global_step} ({trainer.backbone.family}, "
                    f"mixed_precision {c.mixed_precision}, learning_rate {c.learning_rate:g}); stopped without "
                    "writing the LoRA. Try --mixed_precision no (or the other of fp16/bf16) or a lower "
                    "--learning_rate; --resume_from_checkpoint latest continues from the last good checkpoint")
            losses["step_seconds"] = time.perf_counter() - t0
            if loader is not None:
                losses["data_seconds"] = data_seconds  # how long the step waited for its batches
            acc.log(losses, step=trainer.global_step)
            if acc.is_main_process:
                metrics.append(trainer.global_step, losses)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{losses['lr']:.1e}")
            if callback is not None:
                callback(trainer, batches[0] if len(batches) == 1 else batches, losses)
            if trainer.global_step % c.checkpointing_steps == 0 and trainer.global_step < c.max_train_steps:
                trainer.save_checkpoint()
            if c.save_steps and trainer.global_step % c.save_steps == 0:
                trainer.save_snapshot()
            if c.validation_steps and trainer.global_step % c.validation_steps == 0 and not stop.requested:
                shown = trainer.validate(validation_fn)
                if acc.is_main_process:
                    log_validation_images(acc, shown, trainer.global_step)
    except OOM:
        raise MudiError(f"out of GPU memory at batch size {c.train_batch_size}, resolution {trainer.resolution}: "
                        "lower --train_batch_size, add --gradient_checkpointing, --use_8bit_adam or "
                        "--mixed_precision bf16") from None
    bar.close()
    if stop.requested and trainer.global_step < c.max_train_steps:
        path = trainer.save_checkpoint() if trainer.global_step > 0 else None
        where = f"checkpoint saved to {path}" if path else "no step was done yet, nothing to save"
        raise TrainingStopped(f"stopped at step {trainer.global_step} of {c.max_train_steps}; {where}; continue "
                              f"with --resume_from_checkpoint latest", stop.signum or 2)
    acc.wait_for_everyone()
    if acc.is_main_process:
        path = trainer.save_outputs()
        what = "LoRA" if c.train_lora else "token embeddings (Textual Inversion)"
        print(f"mudi train: {trainer.global_step} steps; {what} written to {path}")
    for tracker in acc.trackers:  # not end_training(): it destroys the process group a caller may still need
        tracker.finish()
    return trainer


class MetricsLog:
    """``metrics.jsonl``: one line per optimizer step (``step``, losses, ``lr``, ``step_seconds``), flushed as it
    goes, for loss curves (the UI, ``mudi run``'s report) without TensorBoard. On resume, the lines after the
    resumed step (steps the checkpoint does not hold) are dropped first, so the file always matches the run."""

    def __init__(self, path: Path, resumed_step: int) -> None:
        self.path = path
        kept = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line)["step"]) <= resumed_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash
        write_text_atomic(path, "".join(x + "\n" for x in kept))

    def append(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **{k: round(float(v), 6) for k, v in values.items()}}) + "\n")


def read_metrics(folder: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (a cut last line is skipped)."""
    path = Path(folder) / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
