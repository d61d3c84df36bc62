"""The training form: its defaults per backbone and the ``mudi train`` request it becomes. Imports no gradio.

A request is a mapping of :class:`~mudi.training.config.TrainConfig` keys, checked here exactly as the CLI checks
a config file (unknown keys, types, ranges), and by loading the subjects (every photo needs a mask for
Seg-Mix), so a mistake shows on the page at once instead of in the log of a subprocess.
"""

from __future__ import annotations

from pathlib import Path

from mudi.adapters import registry
from mudi.adapters.weights import is_hub_id
from mudi.config import load_config, parse_overrides, to_dict
from mudi.core.methods import METHODS
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.training.config import TrainConfig
from mudi.ui.config import TOY_CHOICE
from mudi.ui.state import Workspace, slugify, unique_name
from mudi.ui.toy import toy_recipe

#: The offline tiny run of configs/tiny.yaml (seconds on a CPU); the real families keep TrainConfig's defaults.
TINY_DEFAULTS = {"max_train_steps": 30, "learning_rate": 1e-3, "rank": 4, "checkpointing_steps": 10,
                 "validation_steps": 10, "num_validation_inference_steps": 4}
REAL_DEFAULTS = {"checkpointing_steps": 100, "validation_steps": 200, "save_steps": 200}
VALIDATION_PROMPT = "A photo of [V1] and [V2]."


#: The Train tab's "What trains" choices: a LoRA (DreamBooth, Seg-Mix, Cut-Mix by the composition), or the recipe of
#: a comparison method that trains something else (docs/train.md).
TRAINS_CHOICES = [("LoRA (DreamBooth)", "lora"), ("Textual Inversion (token embeddings only)", "ti"),
                  ("Custom Diffusion (K/V LoRA + tokens)", "custom-diffusion")]


def trains_settings(kind: str) -> dict:
    """The TrainConfig values of a "What trains" choice (the benchmark method's own recipe)."""
    if kind in (None, "", "lora"):
        return {}
    choices = [value for _, value in TRAINS_CHOICES]
    if kind not in choices:
        raise MudiError(f"what trains: {kind!r} is not one of {', '.join(choices)}")
    return dict(METHODS[kind].train)


def trains_learning_rate(kind: str, lora_rate: float) -> float:
    """The form's learning rate for a choice: the method recipe's own (TI: 1e-3), else the LoRA's."""
    return float(trains_settings(kind).get("learning_rate", lora_rate))


def form_defaults(backbone: str) -> dict:
    """The training form's values for ``backbone``."""
    base = TrainConfig()
    values = {"max_train_steps": base.max_train_steps, "learning_rate": base.learning_rate, "rank": base.rank,
              "checkpointing_steps": base.checkpointing_steps, "save_steps": base.save_steps,
              "validation_steps": 0, "num_validation_inference_steps": base.num_validation_inference_steps,
              "composition": base.composition, "composition_prob": base.composition_prob}
    if backbone == TOY_CHOICE:  # the toy model: `mudi demo`'s recipe, read from its run file
        values.update({k: v for k, v in toy_recipe().train.items() if k in values})
    else:
        values.update(TINY_DEFAULTS if registry.is_tiny(backbone) else REAL_DEFAULTS)
    return values


def validation_prompt_for(backbone: str) -> str:
    """The training form's validation prompt (the toy model knows only its world's words)."""
    return toy_recipe().validation_prompt if backbone == TOY_CHOICE else VALIDATION_PROMPT


def model_settings(backbone: str) -> tuple[dict, set[str]]:
    """The TrainConfig keys a model choice sets before the form's (the toy model: the family that loads it, its
    shipped folder and the rest of its recipe, e.g. the 32-px resolution), and the keys among them that name a
    path the UI chose itself (checked against the workspace only when "more options" sets them instead)."""
    if backbone != TOY_CHOICE:
        return {"backbone": backbone}, set()
    recipe = toy_recipe()
    return ({**recipe.train, "backbone": recipe.backbone, "pretrained_model_name_or_path": recipe.model},
            {"pretrained_model_name_or_path"})


#: Keys the UI sets itself: "more options" may not change them.
UI_OWNED = ("subjects", "output_dir", "resume_from_checkpoint", "overwrite", "device", "report_to", "progress")
#: Keys whose values are local paths (or, for the model keys, a hub id): inside the workspace only.
UI_PATH_KEYS = ("class_data_dir", "base_lora", "vae", "pretrained_model_name_or_path")
HUB_ID_KEYS = ("vae", "pretrained_model_name_or_path")


def check_paths(request: dict, ws: Workspace | None) -> None:
    """Every path a page sends stays inside the workspace (model keys may also name a hub id)."""
    for key in UI_PATH_KEYS:
        value = request.get(key)
        values = value if isinstance(value, list) else [value] if value else []
        for v in values:
            v = str(v)
            if key in HUB_ID_KEYS and is_hub_id(v) and not Path(v).exists():
                continue
            if ws is None:
                raise MudiError(f"{key}: a path from the page needs a workspace to stay in")
            ws.contain(v, key)


def parse_extra(text: str) -> list[str]:
    """``key=value`` lines (or space-separated items) of the form's "more options" box."""
    items = [t for line in (text or "").splitlines() for t in line.split() if t.strip() and not t.startswith("#")]
    parse_overrides(items)  # a malformed item is one line now
    return items


def build_request(subject_dirs: list[Path], backbone: str, form: dict, extra: str = "", device: str = "auto",
                  validation_prompt: str = VALIDATION_PROMPT, ws: Workspace | None = None) -> dict:
    """The TrainConfig keys of a new run (output_dir is set when it starts), validated."""
    if len(subject_dirs) < 1:
        raise MudiError("no subjects ticked; tick the subjects to train on at the top of the page")
    subjects = load_subjects([str(p) for p in subject_dirs])
    composition = form.get("composition", "segmix")
    if composition != "none":
        if len(subjects) < 2:
            raise MudiError(f"{composition} composes several subjects: tick at least two (or choose composition none)")
        if composition == "segmix":
            missing = [f"{s.name}/{im.path.name}" for s in subjects for im in s.images if im.mask_path is None]
            if missing:
                raise MudiError(f"Seg-Mix needs a mask of every photo; {len(missing)} have none ({', '.join(missing[:4])}"
                                f"{' …' if len(missing) > 4 else ''}): segment them on the Masks page")
    preset, ui_paths = model_settings(backbone)
    form = dict(form)
    recipe = trains_settings(form.pop("trains", "lora"))
    request = {**preset, **recipe, "subjects": [str(Path(p).resolve()) for p in subject_dirs],
               **{k: v for k, v in form.items() if v is not None}, "report_to": "none", "progress": False,
               "device": device}
    steps = int(request.get("validation_steps") or 0)
    request["validation_prompts"] = [validation_prompt] if steps and validation_prompt.strip() else []
    if not request["validation_prompts"]:
        request["validation_steps"] = 0
    for key in ("max_train_steps", "rank", "checkpointing_steps", "save_steps", "validation_steps",
                "num_validation_inference_steps"):
        if key in request:
            request[key] = int(request[key])
    items = parse_extra(extra)
    owned = [i.split("=", 1)[0].strip() for i in items if i.split("=", 1)[0].split(".", 1)[0].strip() in UI_OWNED]
    if owned:
        raise MudiError(f"more options: {owned[0]} is set by the UI itself (tick subjects at the top; runs go in the "
                        "workspace); remove it")
    config = load_config(TrainConfig, values=request, overrides=items)  # the CLI's own checks
    extra_keys = {i.split("=", 1)[0].split(".", 1)[0].strip() for i in items}
    explicit = set(request) | extra_keys
    full = to_dict(config)
    from_page = explicit - (ui_paths - extra_keys)  # a path the UI chose (the toy model) is not the page's
    check_paths({k: full[k] for k in UI_PATH_KEYS if k in from_page}, ws)
    return {k: full[k] for k in full if k in explicit}


def new_run_dir(ws: Workspace, name: str, subject_dirs: list[Path]) -> Path:
    """A fresh folder in ``WORKSPACE/runs/``: ``name``, or the subjects' names joined (``dog6-cat2``)."""
    base = slugify(name) if name and name.strip() else slugify("-".join(Path(p).name for p in subject_dirs), "run")
    return ws.runs_dir / unique_name(ws.runs_dir, base)
