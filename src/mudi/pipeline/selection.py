"""``mudi run``'s step selection (the run file's ``step_selection:`` block): after a composition's LoRA is trained,
every snapshot is rendered on the validation prompts and seeds and judged by the chosen scorer
(:mod:`mudi.scoring.step_selection`); generation then uses the best snapshot. Folder:
``train/<composition>/step-selection/``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mudi.adapters import registry
from mudi.core.methods import training_key
from mudi.data.manifests import fingerprint
from mudi.pipeline.state import RunState
from mudi.sampling.config import generation_settings
from mudi.sampling.folder import generate_to_folder
from mudi.scoring.step_selection import SELECTION_DIR, select_step


def choose_training_step(st: RunState, comp: str, out_dir: Path, final_step: int,
                         load_backbone: Callable[[], Any]) -> dict:
    """Score the snapshots of ``out_dir`` (training key ``comp``: a composition mode or a method with its own recipe), point ``st.train_dirs[comp]`` at the best and
    make the generation fingerprint follow the choice; returns the selection record (also in
    ``st.selections[comp]``)."""
    c, sel = st.config, st.config.step_selection
    method = next(m for m in c.methods if training_key(m) == comp)
    extra = c.method_generation(method)  # the snapshots are rendered as the method's images will be
    probe = c.stage_config("generate", backbone=c.backbone, subjects=st.subject_paths(), prompt="[V1]",
                           output_dir="check", num_images=sel.num_seeds, seed=sel.seed, **extra)
    sampler = generation_settings(probe, "prompt")

    def render(lora: Path, prompt: str, seeds: list[int], folder: Path) -> None:
        cfg = c.stage_config("generate", backbone=c.backbone, pretrained_model_name_or_path=c.pretrained_model_name_or_path,
                             lora=[str(lora)], subjects=st.subject_paths(), prompt=prompt,
                             output_dir=str(folder), num_images=len(seeds), seed=seeds[0], skip_existing=True,
                             **extra)
        generate_to_folder(cfg, backbone=st.models.get("generation", load_backbone))

    def score(images: Path, folder: Path, label: str) -> float | None:
        k = int(images.name[1:])
        cfg = c.stage_config("evaluate", images=str(images), subjects=st.subject_paths(), output_dir=str(folder),
                             prompt=sel.prompts[k])
        return registry.resolve("scorer", sel.scorer)(st, cfg, images, folder, f"{comp} {label}")

    t0 = time.perf_counter()
    try:
        record = select_step(out_dir, out_dir / SELECTION_DIR, sel, final_step,
                             evaluation_seeds=[c.seed + i for i in range(c.num_images)], render=render, score=score,
                             settings={"generate": sampler, "evaluate": c.evaluate}, say=st.say)
    finally:
        st.models.release("generation")
    st.seconds[f"step selection {comp}"] = round(time.perf_counter() - t0, 1)
    st.train_dirs[comp] = Path(record["best_lora"])
    st.fps[f"train/{comp}"] = fingerprint({"train": st.fps[f"train/{comp}"], "selection": record["fingerprint"],
                                           "best_step": record["best_step"]})
    st.selections[comp] = record
    return record
