"""Subject sets on disk.

**Native format** — one folder per subject::

    olis_corgi/
      subject.yaml          # name, identifier, class_noun, optional descriptive_class, optional captions
      00.jpg 01.png …       # reference images (JPEG, PNG, WebP, …; RGBA alpha may serve as the mask)
      masks/00.png …        # optional masks, same stem as the image, white = subject

``subject.yaml``::

    name: dog6
    identifier: olis
    class_noun: dog
    descriptive_class: corgi          # optional; prompts then say "olis corgi"
    captions:                         # optional, per image file
      00.jpg: A photo of olis corgi on an orange background.

A folder holding several such subject folders loads them all.

**MuDI benchmark format** (the authors' ``dataset/`` layout) — one folder per *pair*: ``a00.jpg …``,
``mask_a00.jpg …`` (JPEG, thresholded at 127) and ``metadata.jsonl`` whose first line maps subject letters to
``"<identifier> <descriptive class>"`` and whose other lines are ``{"id", "file_name", "mask_path", "text"}``.
A prior set uses the same layout with ``class_metadata.jsonl`` and bare class names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mudi.config import yaml_error_text
from mudi.core.geometry import make_cutout
from mudi.core.prompts import subject_phrase
from mudi.core.types import Cutout
from mudi.data.images import IMAGE_SUFFIXES, list_images, read_image, read_mask
from mudi.data.toyworld_identity import TOYWORLD_KEY, toyworld_field
from mudi.errors import MudiError
from mudi.io import write_bytes_atomic, write_jsonl_atomic, write_text_atomic

SUBJECT_FILE = "subject.yaml"
MASK_DIR = "masks"
BENCHMARK_FILE = "metadata.jsonl"
PRIOR_FILE = "class_metadata.jsonl"
MAX_TEXT = 1000  # characters of any one name, class or caption in a subject file
_UNSAFE_NAME_CHARS = set('/\\:*?"<>|')


MIN_PHOTO_SIDE = 16
MAX_PHOTO_ASPECT = 8.0


def check_photo_size(hw: tuple[int, int], path: object) -> None:
    """A one-line error for a reference photo too small or too elongated to hold a subject."""
    h, w = hw
    if min(h, w) < MIN_PHOTO_SIDE or max(h, w) > MAX_PHOTO_ASPECT * min(h, w):
        raise MudiError(f"{path}: a {w}x{h} photo cannot show a subject; use photos at least {MIN_PHOTO_SIDE} px "
                        f"on each side and at most {MAX_PHOTO_ASPECT:g}:1 (crop it, or remove it from the folder)")


def check_subject_name(name: object, where: object) -> str:
    """``name`` if it is a safe single path component (a subject's name becomes ``subjects/<name>/`` of a run);
    a one-line :class:`MudiError` otherwise. ``where`` names the file that gave it."""
    if not isinstance(name, str) or not name.strip():
        raise MudiError(f"{where}: name {name!r} must be a non-empty text, e.g. name: olis_corgi")
    bad = sorted({c for c in name if c in _UNSAFE_NAME_CHARS or ord(c) < 32 or ord(c) == 127})
    if bad or name.startswith(".") or name != name.strip() or len(name) > 100:
        raise MudiError(f"{where}: name {name[:60]!r} must be one folder name (no {' '.join(map(repr, bad)) or 'path'}"
                        " characters, no leading dot or spaces, at most 100 characters), e.g. name: olis_corgi")
    return name


def text_field(meta: dict, key: str, where: object, required: bool = False, one_word: bool = False) -> str | None:
    """A subject.yaml text value: a one-line string (None when absent and optional), else a one-line error."""
    value = meta.get(key)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise MudiError(f"{where}: '{key}' is missing; e.g. identifier: olis, class_noun: dog")
        return None
    if not isinstance(value, str):
        raise MudiError(f"{where}: '{key}' must be a text, not {type(value).__name__} ({str(value)[:60]!r})")
    value = value.strip()
    if not value:
        raise MudiError(f"{where}: '{key}' is empty; e.g. identifier: olis, class_noun: dog")
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise MudiError(f"{where}: '{key}' must be one line of at most {MAX_TEXT} characters")
    if one_word and len(value.split()) != 1:
        raise MudiError(f"{where}: '{key}' {value[:60]!r} must be one word (a rare token), e.g. olis")
    return value


def captions_field(value: object, where: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MudiError(f"{where}: 'captions' must map image file names to captions (e.g. 00.jpg: A photo of "
                        f"olis corgi on a sofa.), not a {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise MudiError(f"{where}: captions: {str(k)[:40]!r} must map a file name to a text caption")
        if len(v) > MAX_TEXT:
            raise MudiError(f"{where}: the caption of {k[:40]!r} is {len(v)} characters; at most {MAX_TEXT}")
        out[k] = v
    return out


@dataclass
class SubjectImage:
    path: Path
    mask_path: Path | None = None
    caption: str | None = None


@dataclass
class Subject:
    """One subject: its names and its reference images (with optional masks and captions)."""

    name: str
    identifier: str
    class_noun: str
    images: list[SubjectImage]
    descriptive_class: str | None = None
    root: Path | None = None
    detect_as_text: str | None = None  # subject.yaml's detect_as
    relative_size: float | None = None  # subject.yaml's relative_size (fixed relative size in Seg-Mix, C.1)
    source: str = "native"  # "native" | "benchmark" | "prior"
    toyworld: dict | None = None  # subject.yaml's toyworld: the toy-world identity (data/toyworld_identity.py)
    _cutouts: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def class_name(self) -> str:
        """The class used in prompts: the descriptive class if any, else the class noun."""
        return self.descriptive_class or self.class_noun

    @property
    def detect_as(self) -> str:
        """What the detector is asked for (D&C, the authors' queries): ``detect_as`` from subject.yaml, else the
        class phrase without the identifier ("russian blue", "chow chow")."""
        return self.detect_as_text or self.class_name

    @property
    def phrase(self) -> str:
        """How prompts name this subject: ``"olis corgi"``."""
        return subject_phrase(self.identifier, self.class_name)

    def phrase_without_descriptive_class(self) -> str:
        return subject_phrase(self.identifier, self.class_noun)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(rgb (H, W, 3) uint8, mask (H, W) bool or None)`` of reference image ``index``."""
        item = self.images[index]
        rgb, alpha, raw = read_image(item.path)
        check_photo_size(rgb.shape[:2], item.path)
        if item.mask_path is not None:
            mask = read_mask(item.mask_path, item.path, (rgb.shape[1], rgb.shape[0]), raw)
        elif alpha is not None:
            if not alpha.any():
                raise MudiError(f"{item.path}: its alpha channel is fully transparent; fix the image or add a mask")
            mask = alpha
        else:
            mask = None
        return rgb, mask

    def cutouts(self, max_side: int | None = 1024) -> list[Cutout]:
        """Every reference image cropped to its mask (decoded once, then cached)."""
        if max_side not in self._cutouts:
            out = []
            for i, item in enumerate(self.images):
                rgb, mask = self.load(i)
                if mask is None:
                    raise MudiError(f"{item.path}: no mask for subject {self.name!r}; run `mudi segment "
                                    f"{self.root}` or add masks/{item.path.stem}.png")
                out.append(make_cutout(rgb, mask, max_side))
            self._cutouts[max_side] = out
        return self._cutouts[max_side]

    def full_images(self, max_side: int | None = 1024) -> list[np.ndarray]:
        """Every reference image, whole (for Cut-Mix and plain DreamBooth), downscaled so the longer side is
        at most ``max_side``; decoded once, then cached."""
        key = ("full", max_side)
        if key not in self._cutouts:
            out = []
            for i in range(len(self.images)):
                rgb = self.load(i)[0]
                h, w = rgb.shape[:2]
                if max_side is not None and max(h, w) > max_side:
                    s = max_side / max(h, w)
                    rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                                 Image.BILINEAR))
                out.append(rgb)
            self._cutouts[key] = out
        return self._cutouts[key]

    def to_metadata(self) -> dict:
        meta = {"name": self.name, "identifier": self.identifier, "class_noun": self.class_noun}
        if self.descriptive_class:
            meta["descriptive_class"] = self.descriptive_class
        if self.detect_as_text:
            meta["detect_as"] = self.detect_as_text
        if self.relative_size is not None:
            meta["relative_size"] = self.relative_size
        if self.toyworld is not None:
            meta[TOYWORLD_KEY] = dict(self.toyworld)
        caps = {im.path.name: im.caption for im in self.images if im.caption}
        if caps:
            meta["captions"] = caps
        return meta


def _load_native(folder: Path) -> Subject:
    meta_path = folder / SUBJECT_FILE
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise MudiError(f"{meta_path}: not valid YAML ({yaml_error_text(e)})") from None
    except (UnicodeDecodeError, RecursionError):
        raise MudiError(f"{meta_path}: not a UTF-8 YAML text; save it as UTF-8") from None
    if not isinstance(meta, dict):
        raise MudiError(f"{meta_path}: expected a mapping with name, identifier and class_noun")
    known = {"name", "identifier", "class_noun", "descriptive_class", "captions", "detect_as", "relative_size",
             TOYWORLD_KEY}
    unknown = {str(k) for k in meta} - known
    if unknown:
        raise MudiError(f"{meta_path}: unknown key(s) {sorted(unknown)[:5]}; allowed: {sorted(known)}")
    identifier = text_field(meta, "identifier", meta_path, required=True, one_word=True)
    class_noun = text_field(meta, "class_noun", meta_path, required=True)
    descriptive_class = text_field(meta, "descriptive_class", meta_path)
    detect_as = text_field(meta, "detect_as", meta_path)
    name = check_subject_name(meta["name"] if meta.get("name") is not None else folder.name, meta_path)
    captions = captions_field(meta.get("captions"), meta_path)
    images = []
    for p in list_images(folder):
        mask = None
        mask_dir = folder / MASK_DIR
        if mask_dir.is_dir():
            cands = [c for c in list_images(mask_dir) if c.stem == p.stem]
            mask = cands[0] if cands else None
        images.append(SubjectImage(p, mask, captions.get(p.name)))
    if not images:
        raise MudiError(f"{folder}: no reference images (.jpg, .png, .webp) found; add 3-5 photos of the subject")
    return Subject(name=name, identifier=identifier, class_noun=class_noun, descriptive_class=descriptive_class,
                   images=images, root=folder, source="native", detect_as_text=detect_as,
                   relative_size=_relative_size(meta.get("relative_size"), meta_path),
                   toyworld=toyworld_field(meta.get(TOYWORLD_KEY), meta_path))


def _relative_size(value: object, where: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MudiError(f"{where}: relative_size {value!r} must be a positive finite number, e.g. 2")
    return float(value)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MudiError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                raise MudiError(f"{path}:{n}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
            if not isinstance(row, dict):
                raise MudiError(f"{path}:{n}: each line must be a JSON object")
            rows.append(row)
    if not rows or not isinstance(rows[0].get("id"), dict):
        raise MudiError(f"{path}: the first line must map subject letters to names, e.g. "
                        '{"id": {"a": "olis corgi", "b": "hta chow chow"}}')
    return rows


def _inside(folder: Path, name: object, meta_file: str) -> Path:
    """``folder / name`` for a file name listed in a metadata file; a one-line error when it is not a plain
    relative path that stays inside ``folder``."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise MudiError(f"{folder / meta_file}: {str(name)[:60]!r} must be a file name inside {folder}")
    return folder / name


def _load_benchmark(folder: Path, meta_file: str) -> list[Subject]:
    is_prior = meta_file == PRIOR_FILE
    rows = _read_jsonl(folder / meta_file)
    id_map: dict[str, str] = rows[0]["id"]
    parts = folder.name.split("_and_")
    names = parts if len(parts) == len(id_map) and not is_prior else None
    subjects = []
    for k, (letter, text) in enumerate(id_map.items()):
        words = str(text).split()
        if not words:
            raise MudiError(f"{folder / meta_file}: subject {letter!r} has an empty name")
        if is_prior:
            identifier, desc = "", " ".join(words)
        else:
            if len(words) < 2:
                raise MudiError(f"{folder / meta_file}: subject {letter!r} is {text!r}; expected "
                                "'<identifier> <descriptive class>', e.g. 'olis corgi'")
            identifier, desc = words[0], " ".join(words[1:])
        images = []
        for r in rows[1:]:
            if r.get("id") != letter:
                continue
            if not isinstance(r.get("file_name"), str):
                raise MudiError(f"{folder / meta_file}: a line for subject {letter!r} has no file_name")
            img = _inside(folder, r["file_name"], meta_file)
            mask = _inside(folder, r["mask_path"], meta_file) if r.get("mask_path") else None
            if r.get("text") is not None and not isinstance(r["text"], str):
                raise MudiError(f"{folder / meta_file}: the text of {r['file_name'][:40]!r} must be a caption string")
            if not img.is_file():
                raise MudiError(f"{img}: listed in {meta_file} but missing")
            if mask is not None and not mask.is_file():
                raise MudiError(f"{mask}: listed in {meta_file} but missing")
            images.append(SubjectImage(img, mask, r.get("text")))
        if not images:  # fall back to the file naming convention
            for p in list_images(folder):
                if p.stem.startswith(letter) and p.stem[len(letter):].isdigit():
                    m = next((c for c in (folder / f"mask_{p.name}", folder / f"mask_{p.stem}.png") if c.is_file()),
                             None)
                    images.append(SubjectImage(p, m, None))
        if not images:
            raise MudiError(f"{folder}: no images for subject {letter!r} ({text}) in {meta_file}")
        name = check_subject_name(names[k] if names else f"{folder.name}-{letter}", folder / meta_file)
        noun = desc.split()[-1]  # "white robot toy" -> "toy"; edit subject.yaml after `mudi convert` if wrong
        subjects.append(Subject(name=name, identifier=identifier, class_noun=noun,
                                descriptive_class=desc if desc != noun else None,
                                images=images, root=folder, source="prior" if is_prior else "benchmark"))
    return subjects


def find_subjects(path: str | Path) -> list[Subject]:
    """Load every subject under ``path``: a native subject folder, a folder of them, a benchmark pair
    folder, or a prior set."""
    folder = Path(path)
    if not folder.exists():
        raise MudiError(f"{folder}: no such folder; give a subject folder (with {SUBJECT_FILE}) or a "
                        f"benchmark pair folder (with {BENCHMARK_FILE})")
    if not folder.is_dir():
        raise MudiError(f"{folder}: not a folder; give a subject folder, not a file")
    if (folder / SUBJECT_FILE).is_file():
        return [_load_native(folder)]
    if (folder / BENCHMARK_FILE).is_file():
        return _load_benchmark(folder, BENCHMARK_FILE)
    if (folder / PRIOR_FILE).is_file():
        return _load_benchmark(folder, PRIOR_FILE)
    children = sorted(c for c in folder.iterdir() if c.is_dir() and (c / SUBJECT_FILE).is_file())
    if children:
        return [_load_native(c) for c in children]
    if list_images(folder):
        raise MudiError(f"{folder}: images but no {SUBJECT_FILE}; add one, e.g. "
                        "'identifier: olis' and 'class_noun: dog' (see docs/subjects.md)")
    raise MudiError(f"{folder}: no subjects found (no {SUBJECT_FILE}, {BENCHMARK_FILE} or subject subfolders)")


def load_subjects(paths: list[str | Path]) -> list[Subject]:
    """Load subjects from several paths and check that names and identifiers are unique."""
    if not paths:
        raise MudiError("no subjects given; pass --subjects PATH [PATH ...]")
    subjects: list[Subject] = []
    for p in paths:
        subjects.extend(find_subjects(p))
    seen: dict[str, Subject] = {}
    for s in subjects:
        if s.identifier and s.identifier in seen:
            raise MudiError(f"subjects {seen[s.identifier].name!r} ({seen[s.identifier].root}) and {s.name!r} "
                            f"({s.root}) share the identifier {s.identifier!r}; give each a different rare token")
        seen[s.identifier] = s
    names = [s.name for s in subjects]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise MudiError(f"several subjects are named {sorted(dup)}; rename them in their {SUBJECT_FILE}")
    return subjects


# ------------------------------------------------------------------------------------------------ writing
def mask_path_for(subject: Subject, image_path: Path) -> Path:
    """Where the mask of ``image_path`` goes in ``subject``'s on-disk format."""
    if subject.source == "native":
        return image_path.parent / MASK_DIR / f"{image_path.stem}.png"
    return image_path.parent / f"mask_{image_path.stem}.png"


def record_masks(root: Path, subjects: list[Subject], written: dict[str, str]) -> None:
    """Benchmark / prior folders: point the metadata line of each image in ``written`` (file name → mask file
    name) at its mask. Native folders need nothing (masks are found by name)."""
    if not subjects or subjects[0].source == "native" or not written:
        return
    meta = root / (PRIOR_FILE if subjects[0].source == "prior" else BENCHMARK_FILE)
    if not meta.is_file():
        return
    lines = meta.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines):
        if n > 0 and line.strip():
            row = json.loads(line)
            if row.get("file_name") in written:
                row["mask_path"] = written[row["file_name"]]
                line = json.dumps(row)
        out.append(line)
    write_text_atomic(meta, "\n".join(out) + "\n")


def create_subject_folder(folder: str | Path, photos: list[str | Path], identifier: str, class_noun: str,
                          descriptive_class: str | None = None, name: str | None = None) -> Subject:
    """Make a native subject folder from photo files: ``00.jpg``, ``01.png`` … (copied byte for byte, each
    keeping its suffix) and ``subject.yaml``. Every photo is decoded first, so a bad one writes nothing; a
    folder that already holds a subject is refused. Returns the loaded subject."""
    folder = Path(folder)
    identifier, class_noun = (identifier or "").strip(), (class_noun or "").strip()
    if not identifier or len(identifier.split()) != 1:
        raise MudiError(f"identifier {identifier!r}: give one rare word for the subject, e.g. olis")
    if not class_noun:
        raise MudiError("class_noun is missing: give the subject's class, e.g. dog")
    check_subject_name((name or folder.name).strip(), "the subject's name")
    if (folder / SUBJECT_FILE).exists():
        raise MudiError(f"{folder} already holds a subject ({SUBJECT_FILE}); choose another name")
    paths = [Path(p) for p in photos]
    if not paths:
        raise MudiError("no photos given; add 3-5 photos of the subject")
    for p in paths:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise MudiError(f"{p.name}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
        read_image(p)  # raises a one-line MudiError for an unreadable photo
    for n, p in enumerate(paths):
        write_bytes_atomic(folder / f"{n:02d}{p.suffix.lower()}", p.read_bytes())
    meta = {"name": check_subject_name((name or folder.name).strip(), "the subject's name"),
            "identifier": identifier, "class_noun": class_noun}
    if descriptive_class and descriptive_class.strip() and descriptive_class.strip() != class_noun:
        meta["descriptive_class"] = descriptive_class.strip()
    write_text_atomic(folder / SUBJECT_FILE, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    return _load_native(folder)


def write_prior_metadata(folder: Path, ids: dict[str, str], rows: list[dict]) -> None:
    """``class_metadata.jsonl`` of a prior set: ``{"id": {letter: class}}``, then one line per image
    (``id``, ``file_name``, ``mask_path``, ``text``)."""
    write_jsonl_atomic(Path(folder) / PRIOR_FILE, [{"id": ids}] + list(rows))
