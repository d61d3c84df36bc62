"""Bundled sample subject set (three Unsplash-licensed DreamBooth subjects, see ATTRIBUTION.md)."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_subject_dirs() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.iterdir() if (p / "subject.yaml").is_file())
