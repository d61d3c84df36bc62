"""``mudi merge``: LoRAs → one LoRA (weighted sum, concatenated ranks or gradient fusion) — :mod:`mudi.merging`."""

from __future__ import annotations

from mudi.merging.config import MergeConfig
from mudi.merging.folder import merge_to_folder

HELP = "Merge LoRAs into one: weighted sum, concatenated ranks (exact) or Mix-of-Show gradient fusion."
CONFIG = MergeConfig


def main(config: MergeConfig) -> int:
    result = merge_to_folder(config)
    r = result.report
    print(f"merged {len(r['loras'])} LoRA(s) by {r['method']} into {result.lora_path} ({r['num_layers']} layers, "
          f"rank up to {r['max_rank']}; factorisation residual {r['residual']:.2e} of the merged update)")
    residuals = r.get("output_residuals")
    for k, lora in enumerate(r["loras"] if residuals else []):
        fusion, plain = residuals["fusion"][k], residuals["weighted_sum"][k]
        print(f"  {lora['path']}: output residual on its own activations {fusion:.3f} (weighted sum: {plain:.3f})")
    return 0
