"""``mudi push``: publish a trained LoRA folder to the Hugging Face Hub (``huggingface_hub``).

What goes up is what a user of the LoRA needs and nothing else: the weights (diffusers and, when exported, kohya
format), the model card (``README.md``), ``mudi_subjects.json``, the training config and the validation images
the card shows. Checkpoints, snapshots, logs and the training photos stay home; ``include_photos`` adds each
subject's reference photos and masks (``subjects/<name>/``) so that ``mudi generate --lora`` can compose the
mean-shifted init from the downloaded folder. The token comes from the environment (``HF_TOKEN``) or
``huggingface-cli login``, never from a config file, and never travels over plain http except to this machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mudi.adapters.weights import is_hub_id
from mudi.data.manifests import KOHYA_FILE, LORA_FILE, SUBJECTS_FILE, entry_paths, read_lora_subjects
from mudi.errors import MudiError
from mudi.sampling.layout_llm import check_key_transport
from mudi.training.config import CONFIG_FILE
from mudi.training.outputs import last_validation_images

CARD_FILE = "README.md"


@dataclass
class PushConfig:
    lora: list[str] = field(default_factory=list, metadata={
        "help": "the LoRA folder to publish: the output folder of `mudi train` (or one of its snapshot-N)"})
    repo_id: str = field(default="", metadata={"help": "the Hub repository, e.g. me/olis-corgi-hta-chow-lora"})
    private: bool = field(default=False, metadata={"help": "create the repository as private"})
    include_photos: bool = field(default=False, metadata={
        "help": "also upload each subject's reference photos and masks (subjects/<name>/), which the mean-shifted "
                "init needs; off by default: your photos stay on this machine"})
    revision: str = field(default="main", metadata={"help": "the branch to commit to"})
    endpoint: str = field(default="", metadata={
        "help": "the Hub's address (default: $HF_ENDPOINT or https://huggingface.co)"})
    commit_message: str = field(default="Upload MuDI LoRA (mudi push)", metadata={"help": "the commit message"})

    def __post_init__(self) -> None:
        if len(self.lora) != 1:
            raise MudiError(f"give exactly one LoRA folder to push, got {len(self.lora)}: mudi push RUN --repo_id ID")
        if not is_hub_id(self.repo_id):
            raise MudiError(f"--repo_id {self.repo_id!r}: give NAMESPACE/NAME, e.g. me/olis-corgi-lora")


def files_to_push(folder: Path, include_photos: bool) -> dict[str, Path]:
    """``{path in the repository: local file}`` of a LoRA folder."""
    if not (folder / LORA_FILE).is_file():
        raise MudiError(f"{folder}: no {LORA_FILE}; give the output folder of a finished `mudi train` (or a "
                        "snapshot-N folder in it)")
    found = {name: folder / name for name in (LORA_FILE, KOHYA_FILE, CARD_FILE, SUBJECTS_FILE, CONFIG_FILE)
             if (folder / name).is_file()}
    found.update({rel: folder / rel for rel in last_validation_images(folder)})
    if include_photos:
        for row in read_lora_subjects([str(folder)]) or []:
            _add_photos(found, row)
    return found


def _add_photos(found: dict[str, Path], row: dict) -> None:
    from mudi.data.convert import subject_files
    from mudi.data.subjects import find_subjects

    for path in entry_paths(row):
        if not Path(path).is_dir():
            raise MudiError(f"{path}: the subject folder this LoRA was trained on is gone; push without "
                            "--include_photos or restore it")
        for s in find_subjects(path):
            found.update({f"subjects/{s.name}/{rel}": src for rel, src in subject_files(s).items()})


def push_lora(config: PushConfig, api: object = None) -> str:
    """Create the repository if needed and commit the LoRA folder's files to it; returns the commit's URL."""
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - a dependency of diffusers
        raise MudiError("mudi push needs huggingface_hub: pip install huggingface_hub") from None
    folder = Path(config.lora[0])
    files = files_to_push(folder, config.include_photos)
    endpoint = config.endpoint or os.environ.get("HF_ENDPOINT", "") or "https://huggingface.co"
    check_key_transport(endpoint, "your Hugging Face token")
    api = api or HfApi(endpoint=endpoint)
    ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in sorted(files.items())]
    try:
        api.create_repo(config.repo_id, private=config.private, exist_ok=True)
        info = api.create_commit(config.repo_id, ops, commit_message=config.commit_message,
                                 revision=config.revision)
    except OfflineModeIsEnabled:
        raise MudiError("HF_HUB_OFFLINE is set: unset it to push to the Hub") from None
    except HfHubHTTPError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise MudiError(f"the Hub refused the push to {config.repo_id} ({first}); check the token "
                        "(HF_TOKEN or `huggingface-cli login`) and the repository name") from None
    except OSError as e:
        raise MudiError(f"cannot reach the Hub at {endpoint} ({e})") from None
    return str(getattr(info, "commit_url", "") or f"{endpoint}/{config.repo_id}")
