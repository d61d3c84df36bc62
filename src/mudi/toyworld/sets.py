"""The toy subject sets shipped in ``subjects/``: pairs spanning similarity, and a 3- and a 4-subject set.

Each set is a folder of native subject folders (``subjects/<set>/<subject>/``; the demo pair, the set
``shared_colour``, keeps its place at ``subjects/<subject>/``), each written by
:func:`~mudi.toyworld.world.write_subject_folder` (4 renders with exact masks, the identity under the ``toyworld``
key of its subject.yaml). A subject's renders depend only on its name (its seed is its place in
:data:`RENDER_ORDER`), so the same identity looks the same in every set. Rewrite them with
``python -m mudi.toyworld.sets [--out DIR]`` (deterministic; ``tests/test_toyworld_sets.py`` checks the shipped
files are what it writes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mudi.toyworld.world import DEMO_SUBJECTS, ToySubject, write_subject_folder


def _subject(name: str, identifier: str) -> ToySubject:
    *colours, shape = name.split("_")
    return ToySubject(name, identifier, shape, colours[0], colours[1] if len(colours) > 1 else None)


def _set(*names: str) -> tuple[ToySubject, ...]:
    return tuple(_subject(n, i) for n, i in zip(names, ("olis", "hta", "zwx", "sks")))


#: set name -> its subjects, from the most similar pair to the dissimilar control (the issue's list).
SUBJECT_SETS: dict[str, tuple[ToySubject, ...]] = {
    "shared_colour": DEMO_SUBJECTS,  # same shape, a shared bottom colour: the paper's "similar subjects"
    "same_colours": _set("green_purple_circle", "green_purple_triangle"),  # same colours, different shapes
    "same_shape": _set("purple_cyan_triangle", "red_green_triangle"),  # same shape, no colour shared
    "dissimilar": _set("blue_circle", "yellow_red_triangle"),  # nothing shared: DreamBooth should work
    "three": _set("red_yellow_square", "blue_yellow_square", "green_purple_circle"),  # a similar pair + one
    "four": _set("red_yellow_square", "blue_yellow_square", "green_purple_circle", "cyan_triangle"),
}
PAIRS = ("shared_colour", "same_colours", "same_shape", "dissimilar")
RENDER_ORDER = ("red_yellow_square", "blue_yellow_square", "green_purple_circle", "green_purple_triangle",
                "purple_cyan_triangle", "red_green_triangle", "blue_circle", "yellow_red_triangle", "cyan_triangle")
NUM_IMAGES = 4


def set_folder(root: str | Path, set_name: str) -> Path:
    """Where a set's subject folders are under ``root`` (the demo pair: ``root`` itself)."""
    return Path(root) if set_name == "shared_colour" else Path(root) / set_name


def subject_folders(root: str | Path, set_name: str) -> list[Path]:
    """The subject folders of one set, in the order of :data:`SUBJECT_SETS`."""
    if set_name not in SUBJECT_SETS:
        raise KeyError(f"no toy subject set {set_name!r}; the sets are {', '.join(SUBJECT_SETS)}")
    return [set_folder(root, set_name) / s.name for s in SUBJECT_SETS[set_name]]


def write_subject_sets(root: str | Path) -> list[Path]:
    """Write every set under ``root``; returns the subject folders written."""
    out = []
    for set_name, subjects in SUBJECT_SETS.items():
        for subject, folder in zip(subjects, subject_folders(root, set_name)):
            out.append(write_subject_folder(subject, folder, num_images=NUM_IMAGES,
                                            seed=RENDER_ORDER.index(subject.name)))
    return out


def main(argv: list[str] | None = None) -> None:
    from mudi.toyworld import SUBJECTS_DIR

    ap = argparse.ArgumentParser(description="write the toy subject sets (deterministic)")
    ap.add_argument("--out", default=str(SUBJECTS_DIR), help="folder to write them to (default: the shipped one)")
    folders = write_subject_sets(ap.parse_args(argv).out)
    print(f"wrote {len(folders)} subject folders under {ap.parse_args(argv).out}")


if __name__ == "__main__":
    main()
