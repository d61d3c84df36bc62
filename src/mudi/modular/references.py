"""The subjects of single-subject LoRAs, and their reference photos made with those LoRAs (paper Appendix C.2).

Each LoRA names its subject in its ``mudi_subjects.json`` (mudi runs) or by the identifier and class the user
gives for it (LoRAs from elsewhere). Its reference photos are generated with that LoRA alone from a
single-subject prompt ("a photo of olis corgi, simple background, full body shot."), made into a native subject
folder (``references/<subject>/``: ``00.png …``, ``subject.yaml``) and segmented in place (``masks/``,
``segment/segment_preview.png`` to review). Photos the segmentation could not mask are moved to ``rejected/``
(Seg-Mix needs a mask for every photo); ``generate/`` keeps the generation's sidecars and grid.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mudi.core.prompts import subject_phrase
from mudi.data.manifests import read_manifest
from mudi.data.subjects import SUBJECT_FILE, create_subject_folder
from mudi.data.units import Unit, file_digest
from mudi.devices import dtype_name
from mudi.errors import MudiError
from mudi.modular.config import STAGE_FILE, ModularConfig
from mudi.sampling.config import GenerateConfig
from mudi.sampling.folder import generate_to_folder
from mudi.sampling.loras import lora_file, lora_path
from mudi.segmentation.config import SegmentConfig
from mudi.segmentation.folder import segment_subjects

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)
USABLE = ("ok", "multiple_detections", "kept_user_mask")


@dataclass
class SubjectSpec:
    """One subject of one input LoRA: how prompts name it, and where its reference folder goes."""

    lora_index: int
    name: str
    identifier: str
    class_noun: str
    descriptive_class: str | None = None
    from_manifest: bool = False

    @property
    def phrase(self) -> str:
        return subject_phrase(self.identifier, self.descriptive_class or self.class_noun)


def lora_signature(path: str) -> dict:
    """What identifies a LoRA: its file's content (a LoRA rewritten in place is another input)."""
    return {"sha256": file_digest(lora_path(path))}


def subject_specs(config: ModularConfig) -> list[SubjectSpec]:
    """The subjects of every LoRA, in LoRA order: its ``mudi_subjects.json`` rows, overridden by the
    identifier / class given for it; a LoRA without a manifest needs both."""
    specs: list[SubjectSpec] = []
    for k, p in enumerate(config.lora):
        folder, _ = lora_file(Path(p))  # a missing or ambiguous path fails now
        rows = [r for r in ((read_manifest(folder) or {}).get("subjects") or []) if isinstance(r, dict)]
        ident, noun, desc = (config.given(n, k) for n in ("identifiers", "class_nouns", "descriptive_classes"))
        if rows and (ident or noun or desc) and len(rows) != 1:
            raise MudiError(f"{p}: its mudi_subjects.json lists {len(rows)} subjects; --identifiers / --class_nouns "
                            "describe single-subject LoRAs: give '' for this one")
        if not rows and not (ident and noun):
            raise MudiError(f"{p}: this LoRA has no mudi_subjects.json, so mudi cannot know its subject: give its "
                            "trigger word and class, one entry per LoRA, e.g. --identifiers olis '' --class_nouns dog "
                            "'' ('' = from the LoRA's own manifest)")
        if not rows:
            rows = [{}]
        for r in rows:
            identifier = ident or str(r.get("identifier") or "").strip()
            class_noun = noun or str(r.get("class_noun") or r.get("class_name") or "").strip()
            descriptive = desc or (None if noun else (r.get("descriptive_class") or None))  # a new class drops it
            if not identifier or len(identifier.split()) != 1 or not class_noun:
                raise MudiError(f"{p}: subject {r.get('name') or identifier!r} needs one identifier word and a "
                                "class noun; give --identifiers and --class_nouns for it")
            given = bool(ident or noun or desc)
            name = str(r.get("name") or "") if not given else ""
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or f"{identifier}_{descriptive or class_noun}").strip("_.")
            specs.append(SubjectSpec(k, name, identifier, class_noun, descriptive, from_manifest=not given))
    names = [s.name for s in specs]
    for s in specs:  # two LoRAs of subjects with one name: keep both, apart
        if names.count(s.name) > 1:
            s.name = f"{s.name}-{s.lora_index + 1}"
    idents = [s.identifier for s in specs]
    dup = sorted({i for i in idents if idents.count(i) > 1})
    if dup:
        raise MudiError(f"several LoRAs use the identifier {dup[0]!r}; their subjects would be one word in every "
                        "prompt: give each its own trigger word")
    return specs


def reference_settings(config: ModularConfig, spec: SubjectSpec, backbone_name: str, seed: int) -> dict:
    return {"lora": lora_signature(config.lora[spec.lora_index]), "weight": config.weights[spec.lora_index],
            "phrase": spec.phrase, "name": spec.name, "class_noun": spec.class_noun,
            "descriptive_class": spec.descriptive_class, "prompt": config.reference_prompt,
            "num_images": config.num_reference_images, "seed": seed, "steps": config.num_inference_steps,
            "guidance_scale": config.guidance_scale, "backbone": backbone_name,
            "model": config.pretrained_model_name_or_path, "segmentation": config.segmentation_backend,
            "segment": config.segment}


def make_references(config: ModularConfig, spec: SubjectSpec, backbone_name: str, folder: Path, seed: int,
                    backbone: Callable[[], Any], seg_models: Callable[[], tuple[Any, Any]]) -> tuple[str, bool]:
    """Generate, collect and segment one subject's reference photos into ``folder`` (skipped when its marker
    says done with the same settings). Returns ``(fingerprint, whether it ran)``."""
    unit = Unit.of(folder, reference_settings(config, spec, backbone_name, seed), marker=folder / STAGE_FILE,
                   outputs=(SUBJECT_FILE,), name=f"references of {spec.name}")
    if unit.is_done():
        return unit.fp, False
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished or outdated attempt: start this subject over
    bb = backbone()
    prompt = config.reference_prompt.replace("{phrase}", spec.phrase)
    n = config.num_reference_images
    gen = GenerateConfig(backbone=backbone_name, pretrained_model_name_or_path=config.pretrained_model_name_or_path,
                         lora=[config.lora[spec.lora_index]], lora_weights=[config.weights[spec.lora_index]],
                         prompt=prompt, init="none", num_images=n, seed=seed, batch_size=min(n, 4),
                         num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                         output_dir=str(folder / "generate"), device=str(bb.device), dtype=_dtype(bb))
    generate_to_folder(gen, backbone=bb)  # leaves the shared backbone without this LoRA
    photos = sorted((folder / "generate").glob("*_seed*.png"))
    create_subject_folder(folder, photos, spec.identifier, spec.class_noun, spec.descriptive_class, name=spec.name)
    detector, segmenter = seg_models()
    seg = SegmentConfig(**{**config.segment, "subjects": [str(folder)], "backend": config.segmentation_backend,
                           "device": str(bb.device), "dtype": _dtype(bb)})
    result = segment_subjects(seg, detector=detector, segmenter=segmenter)
    statuses = {r.image: r.status for r in result.images}
    rejected = sorted(name for name, status in statuses.items() if status not in USABLE)
    for name in rejected:  # kept for review, out of the subject's photos (Seg-Mix needs a mask for each)
        (folder / "rejected").mkdir(exist_ok=True)
        (folder / name).replace(folder / "rejected" / name)
    if len(rejected) == len(statuses):
        raise MudiError(f"subject {spec.name}: the segmentation ({config.segmentation_backend}) masked none of its "
                        f"{len(statuses)} generated photos (see {folder / 'segment' / 'segment_preview.png'}); try "
                        "another --segmentation_backend, --segment.threshold, more --num_reference_images or another "
                        "--reference_prompt")
    if rejected:
        log.warning("%s: %d of %d reference photos could not be segmented; moved to %s", spec.name, len(rejected),
                    len(statuses), folder / "rejected")
    unit.finish(prompt=prompt, statuses=statuses, rejected=rejected)
    return unit.fp, True


def _dtype(backbone: Backbone) -> str:
    return dtype_name(backbone.dtype)
