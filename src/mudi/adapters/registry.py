"""The one registry: per kind of model, a table of names → ``"module:attribute"`` and one :func:`load`.

Kinds: ``backbone`` (text-to-image families), ``detector`` (open-vocabulary boxes), ``segmenter`` (box-prompted
masks), ``embedder`` (subject fidelity), ``text_scorer`` (text fidelity), ``describer`` (descriptive classes and
captions, ``mudi describe``) and ``scorer`` (how ``mudi run`` judges a folder of generated images: D&C, the toy
world's checker). Targets are plain strings, so
``import mudi`` imports no model code; :func:`register` adds an entry at run time (a plugin, or a test's own
made-up family) with a string or the factory itself.

Every factory takes ``device`` and ``dtype``; those that read weights also take
``pretrained_model_name_or_path`` (``None``: their default checkpoint). ``tiny-*`` entries build random models
from configs in memory (tests, the offline demo) and take no checkpoint.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mudi.errors import MudiError, unknown_name_error

REGISTRY: dict[str, dict[str, str | Callable[..., Any]]] = {
    "backbone": {
        "sd15": "mudi.adapters.sd:StableDiffusion15Backbone.from_pretrained",
        "sd2": "mudi.adapters.sd:StableDiffusion2Backbone.from_pretrained",
        "sdxl": "mudi.adapters.sdxl:StableDiffusionXLBackbone.from_pretrained",
        "flux": "mudi.adapters.flux:FluxBackbone.from_pretrained",
        "tiny-sd": "mudi.adapters.tiny_backbones:build_tiny_sd",
        "tiny-sd2": "mudi.adapters.tiny_backbones:build_tiny_sd2",
        "tiny-sdxl": "mudi.adapters.tiny_backbones:build_tiny_sdxl",
        "tiny-flux": "mudi.adapters.tiny_backbones:build_tiny_flux",
        "sd3": "mudi.adapters.sd3:StableDiffusion3Backbone.from_pretrained",
        "tiny-sd3": "mudi.adapters.tiny_families:build_tiny_sd3",
        "flux2": "mudi.adapters.flux2:Flux2Backbone.from_pretrained",
        "tiny-flux2": "mudi.adapters.tiny_families:build_tiny_flux2",
        "tiny-flux2-dev": "mudi.adapters.tiny_families:build_tiny_flux2_dev",
        "qwen-image": "mudi.adapters.qwen_image:QwenImageBackbone.from_pretrained",
        "tiny-qwen-image": "mudi.adapters.tiny_families:build_tiny_qwen_image",
        "z-image": "mudi.adapters.z_image:ZImageBackbone.from_pretrained",
        "tiny-z-image": "mudi.adapters.tiny_families:build_tiny_z_image",
    },
    "detector": {
        "owlv2": "mudi.adapters.owlv2:Owlv2Detector.from_pretrained",
        "tiny-owlv2": "mudi.adapters.owlv2:Owlv2Detector.build_tiny",
        "toyworld": "mudi.toyworld.dnc:ToyworldDetector.build",  # the toy checker's objects (docs/toyworld.md)
    },
    "segmenter": {
        "sam": "mudi.adapters.sam:SamSegmenter.from_pretrained",
        "grabcut": "mudi.adapters.grabcut:GrabCutSegmenter.build",
        "tiny-sam": "mudi.adapters.sam:SamSegmenter.build_tiny",
    },
    "embedder": {
        "dinov2": "mudi.adapters.dinov2:Dinov2Embedder.from_pretrained",
        "dreamsim": "mudi.adapters.dreamsim:DreamsimEmbedder.from_pretrained",
        "clip": "mudi.adapters.clip:ClipEmbedder.from_pretrained",
        "tiny-dinov2": "mudi.adapters.dinov2:Dinov2Embedder.build_tiny",
        "tiny-clip": "mudi.adapters.clip:ClipEmbedder.build_tiny",
        "toyworld": "mudi.toyworld.dnc:ToyworldEmbedder.build",  # colour and shape features of a toy crop
    },
    "text_scorer": {
        "clip": "mudi.adapters.clip:ClipScorer.from_pretrained",
        "image_reward": "mudi.adapters.image_reward:ImageRewardScorer.from_pretrained",
        "tiny-clip": "mudi.adapters.clip:ClipScorer.build_tiny",
    },
    "describer": {  # mudi describe: descriptive classes and captions (adapters/describers.py)
        "openai": "mudi.adapters.describers:OpenAIChatDescriber.build",
        "transformers": "mudi.adapters.describers:TransformersDescriber.from_pretrained",
        "toyworld": "mudi.toyworld.describer:ToyworldDescriber.build",
        "tiny-transformers": "mudi.adapters.describers:TransformersDescriber.build_tiny",
    },
    "scorer": {  # how `mudi run` judges a folder of generated images (not a model: a step of the run)
        "dnc": "mudi.pipeline.scorers:score_dnc",
        "toyworld": "mudi.pipeline.scorers:score_toyworld",
    },
}


def _table(kind: str) -> dict[str, str | Callable[..., Any]]:
    if kind not in REGISTRY:
        raise unknown_name_error("kind of model", kind, REGISTRY)
    return REGISTRY[kind]


def names(kind: str) -> list[str]:
    """The registered names of ``kind``, in registration order."""
    return list(_table(kind))


def register(kind: str, name: str, target: str | Callable[..., Any], replace: bool = False) -> None:
    """Add ``name`` to ``kind``'s table: ``target`` is ``"module:attribute"`` or the factory itself."""
    table = _table(kind)
    if name in table and not replace:
        raise MudiError(f"the {kind} {name!r} is registered already; pass replace=True to replace it")
    table[name] = target


def unregister(kind: str, name: str) -> None:
    _table(kind).pop(name, None)


def check(kind: str, requested: Iterable[str]) -> None:
    """Raise a one-line :class:`MudiError` (with the closest name) for any name not registered as ``kind``."""
    table = _table(kind)
    for name in requested:
        if name not in table:
            raise unknown_name_error(kind.replace("_", " "), name, table)


def resolve(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` (imported on first use)."""
    check(kind, [name])
    target = _table(kind)[name]
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise MudiError(f"the {kind} {name!r} needs module {module}, which is not available ({e})") from None
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


#: Keywords a factory must accept when given (others it does not take are left out).
STRICT_KEYWORDS = ("quantization",)


def load(kind: str, name: str, /, pretrained_model_name_or_path: str | None = None, **kwargs: Any) -> Any:
    """Build the ``kind`` registered as ``name`` with ``kwargs`` (``device=``, ``dtype=``, ``batch_size=``…).

    Keywords the factory does not take are left out (a segmenter without weights has no ``dtype``), except a
    checkpoint: giving one to a factory that reads none is an error.
    """
    factory = resolve(kind, name)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if pretrained_model_name_or_path:
        if "pretrained_model_name_or_path" not in params:
            raise MudiError(f"the {kind.replace('_', ' ')} {name!r} builds its model in memory and takes no "
                            f"checkpoint; drop {pretrained_model_name_or_path!r} (or pick a {kind} that loads "
                            "weights)")
        kwargs["pretrained_model_name_or_path"] = pretrained_model_name_or_path
    for key in STRICT_KEYWORDS:  # options that change what is built: never dropped silently
        if kwargs.get(key) and key not in params and not takes_any:
            raise MudiError(f"the {kind.replace('_', ' ')} {name!r} does not support {key} {kwargs[key]!r}; drop it "
                            f"or pick a {kind} that loads real weights")
    if not takes_any:
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return factory(**kwargs)


def load_backbone(name: str, pretrained_model_name_or_path: str | None = None, device: Any = "cpu",
                  dtype: Any = None, quantization: str | None = None) -> Any:
    """``load("backbone", ...)`` with the usual positional order (a :class:`~mudi.adapters.base.Backbone`);
    ``quantization`` (int8, nf4) loads the denoiser quantized."""
    extra = {"quantization": quantization} if quantization else {}
    return load("backbone", name, pretrained_model_name_or_path, device=device, dtype=dtype, **extra)


def family_of(name: str) -> str | None:
    """The family label of a registered backbone, without building it (``None`` when it does not say)."""
    try:
        factory = resolve("backbone", name)
    except MudiError:
        return None
    owner = getattr(factory, "__self__", None)
    return getattr(owner, "family", None) or getattr(factory, "family", None)


def backbone_default(name: str, attribute: str, default: Any = None) -> Any:
    """A class-level default of a registered backbone (``default_init``, ``default_num_inference_steps`` ...),
    without building it; ``default`` when the name is unknown or its adapter does not say."""
    try:
        factory = resolve("backbone", name)
    except MudiError:
        return default
    owner = getattr(factory, "__self__", None) or getattr(factory, "backbone_class", None)
    return getattr(owner, attribute, default)


def is_tiny(name: str) -> bool:
    """Whether a registered name is a ``tiny-*`` build (random weights from configs in memory, offline)."""
    return name.startswith("tiny-")


def backbone_choices(tiny: bool = True) -> str:
    """The registered backbones for help texts and messages: ``"sd15, sd2, sdxl, flux, or the offline tiny-sd,
    tiny-sd2, tiny-sdxl, tiny-flux"`` (generated here, so a new family shows up in every help text)."""
    real = [n for n in names("backbone") if not is_tiny(n)]
    offline = [n for n in names("backbone") if is_tiny(n)]
    if not tiny or not offline:
        return ", ".join(real)
    return f"{', '.join(real)}, or the offline {', '.join(offline)}"


# ------------------------------------------------------------------------------------------------ checkpoints
def pipeline_families() -> dict[str, list[str]]:
    """diffusers pipeline class name → the registered backbone names whose adapter loads it."""
    out: dict[str, list[str]] = {}
    for name in names("backbone"):
        try:
            owner = getattr(resolve("backbone", name), "__self__", None)
        except MudiError:
            continue
        cls_name = getattr(owner, "pipeline_class_name", None)
        for c in getattr(owner, "pipeline_class_names", None) or ([cls_name] if cls_name else []):  # FLUX.2: 2
            out.setdefault(c, []).append(name)
    return out


def read_model_index(pretrained_model_name_or_path: str) -> dict | None:
    """``model_index.json`` of a local folder or a cached hub checkpoint (no download); None if not found."""
    local = Path(pretrained_model_name_or_path)
    if local.is_dir():
        f = local / "model_index.json"
        if not f.is_file():
            raise MudiError(f"{local}: not a diffusers pipeline folder (no model_index.json); give the folder "
                            "saved by `pipe.save_pretrained(...)` or a hub id")
        return json.loads(f.read_text())
    try:
        from huggingface_hub import hf_hub_download

        f = hf_hub_download(pretrained_model_name_or_path, "model_index.json")
    except Exception:  # not cached / offline / no such repo: from_pretrained reports it
        return None
    return json.loads(Path(f).read_text())


def check_pipeline_class(pretrained_model_name_or_path: str, family: str, expected: str) -> None:
    """Raise a one-line MudiError if the checkpoint declares a pipeline other than ``expected``."""
    index = read_model_index(pretrained_model_name_or_path)
    if index is None:
        return
    found = str(index.get("_class_name", ""))
    if found and found != expected:
        others = pipeline_families().get(found, [])
        which = f"{' or '.join(others)}" if others else "another family"
        use = f"use --backbone {others[0]} or " if others else ""
        raise MudiError(f"{pretrained_model_name_or_path} is a {found} checkpoint ({which}), not {family}: {use}"
                        f"give a {expected} checkpoint")
