"""``mudi demo``: ``mudi run`` on a shipped run file, offline.

- default (``--backbone toyworld``): ``mudi/samples/demo-toyworld.yaml`` — DreamBooth vs Seg-Mix vs MuDI on mudi's own toy
  model and two similar toy subjects; the toy world's checker gives each method's success rate;
- ``--backbone tiny-sd`` (or any registered ``tiny-*``): ``demo.yaml`` — the bundled photos of two dogs through
  every stage with tiny *random* models built in memory (the report says the pictures are noise);
- ``--backbone sdxl``: ``demo-sdxl.yaml`` — the same dogs with real weights and the authors' recipe, on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mudi.adapters import registry
from mudi.config import load_config
from mudi.errors import MudiError
from mudi.pipeline import RunConfig, run_pipeline
from mudi.samples import SAMPLES_DIR

HELP = "`mudi run` on a shipped run file: DreamBooth vs Seg-Mix vs MuDI on mudi's toy model (offline, CPU), or the sample dogs"
TINY = tuple(n for n in registry.names("backbone") if n.startswith("tiny-"))  # every registered tiny family


@dataclass
class DemoConfig:
    output_dir: str = field(default="mudi-demo", metadata={"help": "the run folder", "flags": ["--out"]})
    backbone: str = field(default="toyworld", metadata={
        "help": f"toyworld (mudi's toy model), {', '.join(TINY)} (random weights) or sdxl (real weights, a GPU)"})
    steps: int | None = field(default=None, metadata={"help": "training steps (default: the run file's)"})
    num_images: int | None = field(default=None, metadata={"help": "images per prompt and method"})
    seed: int | None = field(default=None, metadata={"help": "generation seed"})
    from_stage: str = field(default="", metadata={"help": "redo this stage and every later one", "flags": ["--from"]})


CONFIG = DemoConfig


def demo_run_config(config: DemoConfig) -> RunConfig:
    files = {"toyworld": "demo-toyworld.yaml", "sdxl": "demo-sdxl.yaml", **{t: "demo.yaml" for t in TINY}}
    if config.backbone not in files:
        raise MudiError(f"--backbone {config.backbone}: the demo runs {', '.join(files)}; for other families "
                        "write a run file (docs/tutorial.md) and use `mudi run`")
    overrides = [f"output_dir={config.output_dir}"]
    if config.backbone in TINY:
        overrides.append(f"backbone={config.backbone}")
    if config.steps is not None:
        overrides.append(f"train.max_train_steps={config.steps}")
    if config.num_images is not None:
        overrides.append(f"num_images={config.num_images}")
    if config.seed is not None:
        overrides.append(f"seed={config.seed}")
    if config.from_stage:
        overrides.append(f"from_stage={config.from_stage}")
    return load_config(RunConfig, SAMPLES_DIR / files[config.backbone], overrides)


def main(config: DemoConfig) -> int:
    report = run_pipeline(demo_run_config(config))
    print(f"mudi demo finished; open the report: {report}")
    return 0
