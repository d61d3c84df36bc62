"""``mudi demo``: ``mudi run`` on a shipped run file — the bundled sample dogs, offline.

With a tiny backbone (default ``tiny-sd``) it runs ``mudi/samples/demo.yaml``: GrabCut masks, a Seg-Mix LoRA and a
plain DreamBooth LoRA on a tiny random model built in memory, images with and without the mean-shifted init, D&C
and CLIP scores with tiny random models, and ``report.html`` — whose first lines say that a random model draws
noise. ``--backbone sdxl`` runs ``demo-sdxl.yaml`` instead: the same stages with real weights on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mudi.config import load_config
from mudi.errors import MudiError
from mudi.pipeline import RunConfig, run_pipeline
from mudi.samples import SAMPLES_DIR

HELP = "`mudi run` on the shipped demo run file: bundled sample dogs, tiny offline model, GrabCut masks"
TINY = ("tiny-sd", "tiny-sd2", "tiny-sdxl", "tiny-flux")


@dataclass
class DemoConfig:
    output_dir: str = field(default="mudi-demo", metadata={"help": "the run folder", "flags": ["--out"]})
    backbone: str = field(default="tiny-sd", metadata={
        "help": f"{', '.join(TINY)} (offline, random weights) or sdxl (real weights, a GPU)"})
    steps: int | None = field(default=None, metadata={"help": "training steps (default: the run file's)"})
    num_images: int | None = field(default=None, metadata={"help": "images per prompt and method"})
    seed: int | None = field(default=None, metadata={"help": "generation seed"})
    from_stage: str = field(default="", metadata={"help": "redo this stage and every later one", "flags": ["--from"]})


CONFIG = DemoConfig


def demo_run_config(config: DemoConfig) -> RunConfig:
    if config.backbone not in (*TINY, "sdxl"):
        raise MudiError(f"--backbone {config.backbone}: the demo runs {', '.join(TINY)} or sdxl; for other "
                        "families write a run file (docs/tutorial.md) and use `mudi run`")
    path = SAMPLES_DIR / ("demo-sdxl.yaml" if config.backbone == "sdxl" else "demo.yaml")
    overrides = [f"output_dir={config.output_dir}", f"backbone={config.backbone}"]
    if config.steps is not None:
        overrides.append(f"train.max_train_steps={config.steps}")
    if config.num_images is not None:
        overrides.append(f"num_images={config.num_images}")
    if config.seed is not None:
        overrides.append(f"seed={config.seed}")
    if config.from_stage:
        overrides.append(f"from_stage={config.from_stage}")
    return load_config(RunConfig, path, overrides)


def main(config: DemoConfig) -> int:
    report = run_pipeline(demo_run_config(config))
    print(f"mudi demo finished; open the report: {report}")
    return 0
