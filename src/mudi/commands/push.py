"""``mudi push RUN --repo_id ID``: publish a LoRA folder to the Hugging Face Hub — :mod:`mudi.publishing`."""

from __future__ import annotations

from mudi.publishing import PushConfig, files_to_push, push_lora

HELP = ("publish a trained LoRA folder (weights, model card, subjects, validation images) to the Hugging Face "
        "Hub; the token comes from HF_TOKEN or `huggingface-cli login`")
CONFIG = PushConfig
POSITIONAL = "lora"


def main(config: PushConfig) -> int:
    from pathlib import Path

    files = files_to_push(Path(config.lora[0]), config.include_photos)
    print(f"pushing {len(files)} file(s) to {config.repo_id}: {', '.join(sorted(files)[:6])}"
          f"{' …' if len(files) > 6 else ''}")
    url = push_lora(config)
    print(f"mudi push: done: {url}")
    return 0
