"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run therefore never leaves a truncated image, JSON or weights file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def save_image_atomic(path: str | os.PathLike, image: Image.Image | np.ndarray, **save_kwargs: Any) -> None:
    """Save a PIL image or an array (HxWx3 uint8 RGB, or HxW bool/uint8 mask) atomically."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        image = Image.fromarray(arr)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
