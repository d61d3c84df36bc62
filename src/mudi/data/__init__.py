"""Subject sets on disk: loading, validation, the official MuDI benchmark format."""

from mudi.data.subjects import Subject, find_subjects, load_subjects

__all__ = ["Subject", "find_subjects", "load_subjects"]
