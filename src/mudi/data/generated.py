"""Generated images on disk: every image mudi generates is a PNG with a JSON sidecar beside it (or in a sibling
folder), written by :func:`write_generated` — the one writer, used by ``mudi generate``, the benchmark's cells
and study, and ``mudi iterate``.

The sidecar schema: ``image`` (the PNG's path relative to the folder the sidecar describes), ``prompt``, ``seed``,
``init``, ``gamma``, ``layout``, ``boxes_normalized`` and ``source_images`` (how the initial latents were
composed; ``None`` and ``[]`` without an init), then what the writer adds about its own run (``subjects``, ``lora``, ``method``…).
The sidecar is written first and the image last: an image that exists means its sidecar does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mudi.io import save_image_atomic, write_json_atomic

CORE_KEYS = ("image", "prompt", "seed", "init", "gamma", "layout", "boxes_normalized", "source_images")


def sidecar(generated: Any, image: str, **fields: Any) -> dict:
    """The sidecar of one generated image (a :class:`mudi.sampling.images.GeneratedImage`): the core keys from
    it, ``image`` as given, then ``fields`` (which may override a core value, e.g. the seed a job asked for)."""
    core = {"image": image, "prompt": generated.prompt, "seed": generated.seed, "init": generated.init,
            "gamma": generated.gamma, "layout": generated.layout, "boxes_normalized": generated.boxes_normalized,
            "source_images": list(generated.source_images)}
    if getattr(generated, "region_control", False):  # Mix-of-Show's regional prompts in the layout's boxes
        core["region_control"] = True
    return {**core, **fields}


def write_generated(image_path: str | Path, image: Any, sidecar_path: str | Path, meta: dict) -> None:
    """Write one generated image and its sidecar, atomically, sidecar first."""
    write_json_atomic(sidecar_path, meta)
    save_image_atomic(image_path, np.asarray(image))
