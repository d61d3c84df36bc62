"""mudi's toy model in the UI: the model choice ``toyworld`` with its recipe, the toy subject sets added to the
workspace, and the toy world's checker's verdicts on generated images. Imports no gradio.

The toy model is no registered backbone: it is the ``sd15`` family loaded from the folder shipped in the package
(:data:`mudi.toyworld.MODEL_DIR`), with the recipe of ``mudi demo``'s run file
(``mudi/samples/demo-toyworld.yaml``: resolution, rank, learning rate, steps, sampler steps, guidance, the init's
layouts). That file is the one place those settings are written; :func:`toy_recipe` reads them from it.
The model folder is named by the UI itself, never by the page, so the rule "every path a page sends lies inside
the workspace" stands; the page only ever picks the name ``toyworld``.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from mudi.config import load_yaml
from mudi.data.subjects import SUBJECT_FILE
from mudi.errors import MudiError
from mudi.samples import SAMPLES_DIR
from mudi.sampling.config import CONFIG_FILE as GENERATE_CONFIG_FILE
from mudi.toyworld import SUBJECTS_DIR
from mudi.toyworld.evaluate import RESULT_FILE
from mudi.toyworld.sets import SUBJECT_SETS, subject_folders
from mudi.training.config import CONFIG_FILE as TRAIN_CONFIG_FILE
from mudi.ui.state import Workspace, unique_name

TOY_RUN_FILE = SAMPLES_DIR / "demo-toyworld.yaml"  # `mudi demo`'s run file: the toy model's recipe
#: train-block keys the UI sets itself (UI_OWNED in training.py) or shows in a field of its own.
_NOT_PRESET = ("report_to", "progress", "device", "output_dir", "subjects", "validation_prompts")
#: generate-block keys the generation form sets (seeds, count, batch).
_NOT_GENERATE = ("batch_size", "num_images", "seed", "output_dir", "device", "prompt", "lora", "gamma")
#: the checker's verdicts, as the page words them (identity mixing = an object of one subject shows another's
#: colour or shape, or one subject is drawn twice).
VERDICT_WORDS = {"correct": "correct", "missing": "missing", "extra": "extra object",
                 "duplicate": "identity mixing (duplicate)", "blend": "identity mixing (blend)",
                 "wrong_shape": "wrong shape", "wrong_colour": "wrong colour"}
TOY_NOTE = ("*toyworld is mudi's toy model: a 5 M-parameter diffusion model pretrained on a CPU on 32×32 pictures "
            "of coloured shapes (docs/toyworld.md). Add the toy subjects on the Subjects tab, train on CPU in "
            "minutes, and the toy world's checker judges every generated image (correct, identity mixing, "
            "missing …). It shows the problem and MuDI's fix at toy scale, nothing about real photographs.*")


@dataclass(frozen=True)
class ToyRecipe:
    """The toy model's settings, as ``mudi demo`` runs it."""

    backbone: str  # the family that loads the folder (sd15)
    model: str  # the shipped model folder, absolute
    train: dict  # TrainConfig keys of the run file (without the UI's own)
    generate: dict  # GenerateConfig keys of the run file (without the form's)
    prompt: str  # the prompt of the run file, [V1] and [V2]
    validation_prompt: str


@functools.lru_cache(maxsize=1)
def toy_recipe() -> ToyRecipe:
    data = load_yaml(TOY_RUN_FILE)
    model = (TOY_RUN_FILE.parent / str(data["pretrained_model_name_or_path"])).resolve()
    train = dict(data.get("train") or {})
    prompts = list(data.get("prompts") or ["a photo of a [V1] and a [V2]."])
    validation = list(train.get("validation_prompts") or prompts)
    return ToyRecipe(str(data["backbone"]), str(model), {k: v for k, v in train.items() if k not in _NOT_PRESET},
                     {k: v for k, v in (data.get("generate") or {}).items() if k not in _NOT_GENERATE},
                     str(prompts[0]), str(validation[0]))


def is_toy_model(pretrained_model_name_or_path: str | Path | None) -> bool:
    """Whether a LoRA's base model (its manifest's ``pretrained_model_name_or_path``) is the shipped toy model."""
    if not pretrained_model_name_or_path:
        return False
    try:
        return Path(pretrained_model_name_or_path).resolve() == Path(toy_recipe().model)
    except (OSError, RuntimeError):
        return False


# ------------------------------------------------------------------------------------------------ subjects
def toy_set_choices() -> list[tuple[str, str]]:
    """``(label, set name)`` of every shipped toy subject set, e.g. ``shared_colour: olis red yellow square, hta
    blue yellow square``."""
    return [(f"{name}: {', '.join(f'{s.identifier} {s.descriptive_class}' for s in subjects)}", name)
            for name, subjects in SUBJECT_SETS.items()]


def _same_subject(a: Path, b: Path) -> bool:
    try:
        return yaml.safe_load((a / SUBJECT_FILE).read_text()) == yaml.safe_load((b / SUBJECT_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return False


def add_toy_subjects(ws: Workspace, set_name: str = "shared_colour") -> tuple[list[Path], list[Path]]:
    """Copy one shipped toy subject set (renders, exact masks, subject.yaml with its ``toyworld`` identity) into
    ``WORKSPACE/subjects/``. A subject already there (the same subject.yaml) is kept; a subject of the same name
    with another identifier (``green_purple_circle`` is ``olis`` in one set and ``zwx`` in another) gets the
    folder ``<name>-<identifier>``. Returns the set's folders in the workspace, in [V1], [V2] order, and the ones
    added now."""
    if set_name not in SUBJECT_SETS:
        raise MudiError(f"no toy subject set {set_name!r}; the sets are {', '.join(SUBJECT_SETS)}")
    folders, added = [], []
    for src in subject_folders(SUBJECTS_DIR, set_name):
        same = [p for p in ws.subject_dirs() if _same_subject(p, src)]
        if same:
            folders.append(same[0])
            continue
        identifier = (yaml.safe_load((src / SUBJECT_FILE).read_text()) or {}).get("identifier", "toy")
        name = src.name if not (ws.subjects_dir / src.name).exists() else unique_name(
            ws.subjects_dir, f"{src.name}-{identifier}")
        dst = ws.subjects_dir / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        folders.append(dst)
        added.append(dst)
    return folders, added


# ------------------------------------------------------------------------------------------------ verdicts
def read_verdicts(evaluation_dir: str | Path) -> dict | None:
    """The checker's result of a generation (``evaluation/toyworld.json``: the summary and each image's verdict),
    or None when the images were not judged by it."""
    path = Path(evaluation_dir) / RESULT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def verdict_counts_text(result: dict) -> str:
    """``3/8 correct (identity mixing (blend) 2, missing 3)``."""
    others = [f"{VERDICT_WORDS.get(v, v)} {n}" for v, n in (result.get("verdicts") or {}).items() if v != "correct"]
    return f"{result.get('successes', 0)}/{result.get('n', 0)} correct" + (f" ({', '.join(others)})" if others else "")


def method_label(lora_folder: str | Path | None, gamma: float | None) -> str:
    """What a generation compares, in the paper's words: DreamBooth (no composition), Cut-Mix, Seg-Mix (a Seg-Mix
    LoRA with the plain sampler, γ 0) or MuDI (Seg-Mix + the mean-shifted init)."""
    composition = None
    folder = Path(lora_folder) if lora_folder else None
    for candidate in ((folder, folder.parent) if folder is not None else ()):
        try:
            data = yaml.safe_load((candidate / TRAIN_CONFIG_FILE).read_text())
        except (OSError, yaml.YAMLError):
            continue
        composition = (data or {}).get("composition")
        break
    base = {"none": "DreamBooth", "cutmix": "Cut-Mix", "segmix": "Seg-Mix"}.get(composition or "", "LoRA")
    init = bool(gamma) and gamma > 0
    if base == "Seg-Mix" and init:
        return f"MuDI (Seg-Mix + init γ {gamma:g})"
    return f"{base} + init γ {gamma:g}" if init else base


def toy_summary_table(ws: Workspace, evaluation_dir: str = "evaluation") -> tuple[list[str], list[list]]:
    """One row per toy generation of the workspace, newest first: its method (from the run's composition and the
    γ used), the LoRA, the images judged, the correct ones and the failures."""
    headers = ["generation", "method", "LoRA", "images", "correct", "share", "failures"]
    rows = []
    for gen in ws.generation_dirs():
        result = read_verdicts(gen / evaluation_dir)
        if result is None:
            continue
        try:
            config = yaml.safe_load((gen / GENERATE_CONFIG_FILE).read_text()) or {}
        except (OSError, yaml.YAMLError):
            config = {}
        lora = (config.get("lora") or [None])[0]
        n, k = int(result.get("n", 0)), int(result.get("successes", 0))
        failures = ", ".join(f"{VERDICT_WORDS.get(v, v)} {c}" for v, c in (result.get("verdicts") or {}).items()
                             if v != "correct")
        rows.append([gen.name, method_label(lora, config.get("gamma")), Path(lora).name if lora else "", n, k,
                     round(k / n, 3) if n else None, failures])
    return headers, rows
