"""``mudi iterate``: iterative training on the model's own best images — :mod:`mudi.iterative`."""

from __future__ import annotations

from mudi.iterative.config import IterateConfig
from mudi.iterative.loop import run_iterations

HELP = ("Iterative training: generate multi-subject images with the LoRA, score them with D&C, keep the top K, "
        "fine-tune on them with KL; repeat for R rounds (resumable, with a report).")
CONFIG = IterateConfig


def main(config: IterateConfig) -> int:
    result = run_iterations(config)
    for r in result.rounds:
        s = r["stats"]
        print(f"  round {r['round']}: mean {s.get('mean', float('nan')):.3f}, median {s.get('median', float('nan')):.3f}"
              f" over {s.get('num_images', 0)} images; kept {len(r['kept'])}")
    if result.final:
        s = result.final["stats"]
        print(f"  final model on round 1's prompts and seeds: mean {s.get('mean', float('nan')):.3f}, median "
              f"{s.get('median', float('nan')):.3f}")
    print(f"mudi iterate: the last round's LoRA is {result.lora_dir}; report in {result.output_dir / 'report.html'}")
    return 0
