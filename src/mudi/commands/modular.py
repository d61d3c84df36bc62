"""``mudi modular``: single-subject LoRAs → one multi-subject LoRA without identity mixing — :mod:`mudi.modular`."""

from __future__ import annotations

from mudi.modular.config import ModularConfig
from mudi.modular.pipeline import run_modular

HELP = ("Combine single-subject LoRAs: generate and segment reference photos with each, merge them, fine-tune the "
        "merged model with Seg-Mix and KL, and write one LoRA (resumable).")
CONFIG = ModularConfig


def main(config: ModularConfig) -> int:
    result = run_modular(config)
    ran = [k for k, v in result.stages.items() if v == "ran"]
    print(f"mudi modular: {len(ran)} stage(s) run, {len(result.stages) - len(ran)} finished before; the LoRA of "
          f"{', '.join(result.subjects)} is {result.lora_dir} (mudi generate --lora {result.lora_dir} --prompt "
          "\"[V1] and [V2] ...\")")
    return 0
