"""One holder for the models a stage pipeline keeps between its units of work: built on first use, kept while
the units that need them run, released explicitly — before a training loads its own model, and at the end.

Used by ``mudi run``, the benchmark, ``mudi modular`` and ``mudi iterate``: a generation backbone, the evaluation
models, a detector and segmenter, a scorer.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch


class ModelPool:
    """Named models with explicit lifetimes: :meth:`get` builds a model once, :meth:`release` drops it."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The model ``key``, built by ``build()`` the first time it is asked for."""
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]

    def held(self, key: str) -> bool:
        return key in self._models

    def put(self, key: str, model: Any) -> None:
        """Hold a model built elsewhere (e.g. injected by a caller or a test)."""
        self._models[key] = model

    def release(self, *keys: str) -> None:
        """Drop ``keys`` (every model without keys) and collect them, so their memory is free for what comes
        next (a training loads its own model)."""
        for key in keys or tuple(self._models):
            self._models.pop(key, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
