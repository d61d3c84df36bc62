"""``mudi convert`` as a library call: MuDI benchmark pair folder (or prior set) → native subject folders.

Each subject becomes ``OUT/<name>/`` with its original image files copied byte for byte, its JPEG masks
thresholded (> 127) and saved as lossless ``masks/<stem>.png``, and a ``subject.yaml`` holding the
identifier, class noun, descriptive class and per-image captions.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mudi.data.images import read_image, read_mask
from mudi.data.subjects import MASK_DIR, SUBJECT_FILE, Subject, find_subjects
from mudi.errors import MudiError
from mudi.io import prepare_output_dir, save_image_atomic, write_bytes_atomic, write_text_atomic


def subject_files(subject: Subject) -> dict[str, Path]:
    """The files mudi reads of ``subject``, by their path in a native subject folder: each photo, its mask under
    ``masks/`` (as it is), and ``subject.yaml`` for a native subject (what ``mudi run`` copies, ``mudi push``
    uploads)."""
    out = {}
    for im in subject.images:
        out[im.path.name] = im.path
        if im.mask_path is not None:
            out[f"{MASK_DIR}/{im.mask_path.name}"] = im.mask_path
    if subject.source == "native" and subject.root is not None:
        out[SUBJECT_FILE] = Path(subject.root) / SUBJECT_FILE
    return out


def convert(pair_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    subjects = find_subjects(pair_dir)
    if all(s.source == "native" for s in subjects):
        raise MudiError(f"{pair_dir}: already in the native format; nothing to convert")
    out_dir = Path(out_dir)
    targets = [out_dir / s.name for s in subjects]
    existing = [t for t in targets if (t / SUBJECT_FILE).exists()]
    if existing and not overwrite:
        raise MudiError(f"{existing[0]} already exists; pass --overwrite or choose another --output_dir")
    for s in subjects:  # validate everything first: nothing half-written
        for i in range(len(s.images)):
            s.load(i)
    prepare_output_dir(out_dir, "conversion output folder")
    for s, target in zip(subjects, targets):
        for item in s.images:
            write_bytes_atomic(target / item.path.name, item.path.read_bytes())
            if item.mask_path is not None:
                rgb, _, raw = read_image(item.path)
                mask = read_mask(item.mask_path, item.path, (rgb.shape[1], rgb.shape[0]), raw)
                save_image_atomic(target / MASK_DIR / f"{item.path.stem}.png", mask)
        write_text_atomic(target / SUBJECT_FILE, yaml.safe_dump(s.to_metadata(), sort_keys=False, allow_unicode=True))
    return targets
