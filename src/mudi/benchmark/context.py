"""The state of one benchmark run that its cells share (:class:`BenchmarkRunner`): the config, the process
group, the models (built lazily, kept between cells in a :class:`mudi.adapters.pool.ModelPool`) and the counts
of cell stages run and skipped. Below :mod:`mudi.benchmark.cells` and :mod:`mudi.benchmark.study`, which take it
as their first argument, and :mod:`mudi.benchmark.runner`, which makes it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import PartialState

from mudi.adapters import registry
from mudi.adapters.pool import ModelPool
from mudi.benchmark.config import BenchmarkConfig
from mudi.core.methods import GENERIC_CLASSES
from mudi.devices import describe, resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.scoring.models import build_detector, build_embedders, build_text_scorers, metric_name

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)


class _NoDetector:
    """Stands in when the detector cannot be loaded: no detections, and no D&C metric is reported."""

    def detect(self, images: Any, queries: Any, threshold: float) -> list[list[Any]]:
        return [[] for _ in images]


class BenchmarkRunner:
    """The state of one benchmark run: its config, the process group, the models (built lazily and shared
    between cells) and the counts of stages run and skipped. The cells are :mod:`mudi.benchmark.cells`."""

    def __init__(self, config: BenchmarkConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
                 text_scorers: dict[str, Any] | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.models = ModelPool()  # the generation backbone (released before a training), the evaluation models
        if detector is not None or embedders is not None or text_scorers is not None:  # injected (tests, callers)
            self.models.put("evaluation", (detector if detector is not None else _NoDetector(), dict(embedders or {}),
                                           dict(text_scorers or {}), {}))
        self.generic_classes = {**GENERIC_CLASSES, **{k.lower(): v for k, v in config.generic_classes.items()}}
        on_cpu = config.device == "cpu" or config.train.get("device") == "cpu"
        self.state = PartialState(cpu=on_cpu)
        self.counts = {"train": 0, "generate": 0, "evaluate": 0, "skipped": 0}
        self.trained_recipes: set[str] = set()  # recipes trained in this run (methods may share one)

    def say(self, text: str) -> None:
        if self.state.is_main_process:
            print(f"mudi benchmark: {text}", flush=True)

    def placement(self) -> tuple[Any, Any]:
        """Generation and evaluation ``(device, dtype)``: ``auto`` is this process's accelerate device."""
        c = self.config
        device = self.state.device if c.device == "auto" else resolve_device(c.device)
        return device, resolve_dtype(c.dtype, device)

    def release_generation_backbone(self) -> None:
        self.models.release("generation")

    def generation_backbone(self) -> Backbone:
        return self.models.get("generation", self._load_generation_backbone)

    def _load_generation_backbone(self) -> Backbone:
        device, dtype = self.placement()
        self.say(f"generation and evaluation on {describe(device, dtype)}")
        return registry.load_backbone(self.config.backbone, self.config.pretrained_model_name_or_path, device, dtype)

    def evaluation_models(self, probe: Any) -> tuple[Any, dict, dict, dict]:
        """Detector, embedders and text scorers, built once; a model that cannot be built is left out and
        its metric reported as n/a with the reason."""
        return self.models.get("evaluation", lambda: self._build_evaluation_models(probe))

    def _build_evaluation_models(self, probe: Any) -> tuple[Any, dict, dict, dict]:
        unavailable: dict[str, str] = {}

        def attempt(build: Callable[[], Any], what: str) -> Any:
            try:
                return build()
            except (MudiError, ImportError, OSError) as e:
                log.warning("%s unavailable: %s", what, e)
                return e

        det = attempt(lambda: build_detector(probe), f"detector {probe.detector}")
        embedders: dict[str, Any] = {}
        text: dict[str, Any] = {}
        for name in probe.embedders:
            metric = metric_name("embedder", name)
            if isinstance(det, Exception):
                unavailable[metric] = f"needs the detector {probe.detector}: {det}"
                continue
            one = attempt(lambda n=name: build_embedders(dataclasses.replace(probe, embedders=[n])), f"embedder {name}")
            if isinstance(one, Exception):
                unavailable[metric] = str(one)
            else:
                embedders.update(one)
        for name in probe.text_scorers:
            one = attempt(lambda n=name: build_text_scorers(dataclasses.replace(probe, text_scorers=[n])), f"text scorer {name}")
            if isinstance(one, Exception):
                unavailable[metric_name("text_scorer", name)] = str(one)
            else:
                text.update(one)
        return _NoDetector() if isinstance(det, Exception) else det, embedders, text, unavailable
