"""Toy subjects beyond the demo pair (issue 24, item 2): the identity in subject.yaml's ``toyworld`` key, the
shipped sets (pairs spanning similarity, 3 and 4 subjects), and the checker's verdicts on scenes of them."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.toyworld import SUBJECTS_DIR
from mudi.toyworld.checker import check_image
from mudi.toyworld.evaluate import check_folder, toy_subject, toy_subjects
from mudi.toyworld.sets import PAIRS, SUBJECT_SETS, subject_folders, write_subject_sets
from mudi.toyworld.world import (
    COLOURS,
    SHAPES,
    Scene,
    ToySubject,
    place_objects,
    render_scene,
    write_subject_folder,
)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_the_shipped_sets_are_what_the_script_writes(tmp_path):
    write_subject_sets(tmp_path)
    assert _files(tmp_path) == _files(SUBJECTS_DIR)
    for name in _files(tmp_path):
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(tmp_path / name)), np.asarray(Image.open(SUBJECTS_DIR / name)))
        else:
            assert (tmp_path / name).read_text() == (SUBJECTS_DIR / name).read_text(), name
    assert sum((SUBJECTS_DIR / n).stat().st_size for n in _files(SUBJECTS_DIR)) < 400_000
    assert [s.name for s in load_subjects([SUBJECTS_DIR])] == ["blue_yellow_square", "red_yellow_square"]


def test_every_set_spans_the_similarity_it_names_and_loads_with_its_identity():
    sets = {k: toy_subjects(subject_folders(SUBJECTS_DIR, k)) for k in SUBJECT_SETS}
    for k, subjects in sets.items():
        assert subjects == list(SUBJECT_SETS[k]), k
        assert len({s.identifier for s in subjects}) == len(subjects)
    shared = {k: (len({s.shape for s in sets[k]}), set(sets[k][0].colours) & set(sets[k][1].colours)) for k in PAIRS}
    assert shared["shared_colour"] == (1, {"yellow"}) and shared["same_colours"] == (2, {"green", "purple"})
    assert shared["same_shape"] == (1, set()) and shared["dissimilar"] == (2, set())
    assert [len(sets["three"]), len(sets["four"])] == [3, 4]
    assert set(toy_subjects([SUBJECTS_DIR / "four"])) == set(SUBJECT_SETS["four"])  # a set folder: all (by name)
    with pytest.raises(MudiError, match="holds 4 subjects; give one subject folder"):
        toy_subject(SUBJECTS_DIR / "four")


def _scene(identities, seed):
    """A render of ``identities``: placed at random (1-2 objects, the world's way) or in the cells of a 2×2 grid
    (3-4: random placement rarely fits them on 32 px)."""
    rng = np.random.default_rng(seed)
    if len(identities) <= 2:
        objects = place_objects(rng, [(s.shape, s.top, s.bottom) for s in identities], (11, 16))
    else:
        cells = rng.permutation([(8, 8), (24, 8), (8, 24), (24, 24)])
        objects = tuple(s.spec(float(rng.integers(11, 13)), cx + rng.integers(-1, 2) / 2, cy + rng.integers(-1, 2) / 2)
                        for s, (cx, cy) in zip(identities, cells))
    return render_scene(Scene(objects, (236, 240, 231) if seed % 2 else (255, 255, 255)))[0]


def _other(subjects, attribute):
    """A shape / colour none of ``subjects`` has (None: they have them all)."""
    pool = SHAPES if attribute == "shape" else COLOURS
    return next((v for v in pool if all(v not in (s.shape, *s.colours) for s in subjects)), None)


@pytest.mark.parametrize("set_name", list(SUBJECT_SETS))
def test_the_checker_judges_constructed_scenes_of_every_set(set_name):
    subjects = toy_subjects(subject_folders(SUBJECTS_DIR, set_name))
    specs = [s.spec() for s in subjects]
    a = subjects[0]
    stranger = next(ToySubject("x", "x", h, c) for h in SHAPES for c in COLOURS
                    if (h, c, None) not in [(s.shape, s.top, s.bottom) for s in subjects])
    scenes = {"correct": subjects, "missing": subjects[1:], "extra": [*subjects, stranger],
              "duplicate": [a, *subjects[:-1]] if len(subjects) > 2 else [a, a]}
    colour, shape = _other(subjects, "colour"), _other(subjects, "shape")
    if colour:  # a colour no subject has (the four-subject set uses all six: every wrong colour is a blend)
        scenes["wrong_colour"] = [ToySubject("x", "x", a.shape, colour, a.bottom), *subjects[1:]]
    if shape:
        scenes["wrong_shape"] = [ToySubject("x", "x", shape, a.top, a.bottom), *subjects[1:]]
    # identity mixing: the first subject takes a colour (or the shape) of another, where that makes a new identity
    hybrids = [h for o in subjects[1:] for h in ((a.shape, o.top, a.bottom), (a.shape, a.top, o.bottom),
                                                (o.shape, a.top, a.bottom))
               if h[1] != h[2] and h not in [(s.shape, s.top, s.bottom) for s in subjects]]
    if hybrids:
        scenes["blend"] = [ToySubject("x", "x", *hybrids[0]), *subjects[1:]]
    assert ("blend" in scenes) == (set_name not in ("shared_colour", "same_colours"))  # one attribute apart: none
    for verdict, identities in scenes.items():
        if len(identities) > 4:  # five objects do not fit the 32-px world
            continue
        for seed in range(2):
            assert check_image(_scene(identities, seed), specs).verdict == verdict, (set_name, verdict, seed)


def test_any_toy_subject_a_user_writes_is_judged(tmp_path):
    """Two subjects in no shipped set, in folders of their own and in a `mudi run` folder's layout (the run's
    scorer passes names)."""
    mine = [ToySubject("cyan_purple_circle", "mek", "circle", "cyan", "purple"),
            ToySubject("yellow_square", "qpt", "square", "yellow")]
    run = tmp_path / "run"
    folders = [write_subject_folder(s, run / "subjects" / s.name, num_images=2, seed=k) for k, s in enumerate(mine)]
    assert toy_subjects(folders) == mine and load_subjects(folders)[0].toyworld == {
        "shape": "circle", "top": "cyan", "bottom": "purple"}
    images = run / "generate" / "p00"
    images.mkdir(parents=True)
    for k, identities in enumerate([mine, mine, mine[:1], [mine[0], mine[0]]]):
        Image.fromarray(_scene(identities, k)).save(images / f"{k:04d}_seed{k}.png")
    out = run / "evaluate" / "p00"
    by_folder = check_folder(images, folders, out)
    by_name = check_folder(images, [s.name for s in mine], out)
    assert by_folder["images"] == by_name["images"] == {"0000_seed0.png": "correct", "0001_seed1.png": "correct",
                                                        "0002_seed2.png": "missing", "0003_seed3.png": "duplicate"}
    assert by_name["identities"] == {"cyan_purple_circle": "cyan purple circle", "yellow_square": "yellow square"}


def _subject_yaml(folder, toyworld):
    meta = yaml.safe_load((folder / "subject.yaml").read_text())
    meta["toyworld"] = toyworld
    if toyworld is None:
        del meta["toyworld"]
    (folder / "subject.yaml").write_text(yaml.safe_dump(meta))


@pytest.mark.parametrize("toyworld, error", [
    ("red square", "must be a mapping"),
    ({"shape": "square", "top": "red", "colour": "blue"}, r"unknown key\(s\) \['colour'\]"),
    ({"shape": "square", "top": "dark red"}, "'toyworld.top' must be one word"),
    ({"top": "red"}, "'toyworld.shape' must be one word"),
])
def test_a_malformed_toyworld_key_is_a_one_line_error_at_load(tmp_path, toyworld, error):
    folder = write_subject_folder(ToySubject("s", "olis", "square", "red"), tmp_path / "s", num_images=1)
    _subject_yaml(folder, toyworld)
    with pytest.raises(MudiError, match=error):
        load_subjects([folder])


def test_an_identity_outside_the_world_or_none_is_named_with_its_file(tmp_path):
    folder = write_subject_folder(ToySubject("s", "olis", "square", "red"), tmp_path / "s", num_images=1)
    _subject_yaml(folder, {"shape": "square", "top": "orange"})
    with pytest.raises(MudiError, match=r"subject.yaml: 'toyworld': colour 'orange' is not one of"):
        toy_subject(folder)
    _subject_yaml(folder, {"shape": "hexagon", "top": "red"})
    with pytest.raises(MudiError, match="shape 'hexagon'"):
        toy_subject(folder)
    _subject_yaml(folder, None)
    with pytest.raises(MudiError, match="is not a toy-world subject .* add e.g. 'toyworld: "):
        toy_subject(folder)


def test_mudi_run_judges_toy_subjects_of_no_shipped_set(tmp_path):
    """The issue's symptom: ``mudi run`` with ``scorers: [toyworld]`` on other toy subjects stopped with "is not a
    toy-world subject". Now the identity travels with the run's copies of the subjects, and D&C with the toy
    detector and embedder runs beside the checker (here on a tiny random model's noise: only the plumbing)."""
    from mudi.cli import main
    from mudi.toyworld.evaluate import read_result
    from tests.test_run import RUN, _write_run

    mine = [ToySubject("cyan_purple_circle", "mek", "circle", "cyan", "purple"),
            ToySubject("yellow_square", "qpt", "square", "yellow")]
    folders = [str(write_subject_folder(s, tmp_path / "mine" / s.name, num_images=2, seed=k))
               for k, s in enumerate(mine)]
    cfg = _write_run(tmp_path, subjects=folders, scorers=["toyworld", "dnc"], num_images=2, segmix_preview=1,
                     train={**RUN["train"], "max_train_steps": 2, "resolution": 32},
                     generate={**RUN["generate"], "height": 32, "width": 32},
                     evaluate={"detector": "toyworld", "embedders": ["toyworld"], "text_scorers": []})
    assert main(["run", str(cfg)]) == 0
    run = tmp_path / "run"
    assert yaml.safe_load((run / "subjects" / "yellow_square" / "subject.yaml").read_text())["toyworld"] == {
        "shape": "square", "top": "yellow"}
    result = read_result(run / "evaluate" / "mudi" / "p00")
    assert result["n"] == 2 and result["identities"] == {"cyan_purple_circle": "cyan purple circle",
                                                         "yellow_square": "yellow square"}
    summary = json.loads((run / "evaluate" / "mudi" / "p00" / "summary.json").read_text())
    assert "dnc_toyworld" in summary["means"]  # D&C through the toy detector and embedder


def test_mudi_run_refuses_a_toy_identity_outside_the_world_before_writing(tmp_path):
    """A wrong colour word in a toy subject's identity is one line when the run starts (the checker's hook),
    not after training; nothing is written."""
    from mudi.cli import main

    a = write_subject_folder(ToySubject("a", "olis", "square", "red"), tmp_path / "a", num_images=1)
    b = write_subject_folder(ToySubject("b", "hta", "square", "blue"), tmp_path / "b", num_images=1)
    _subject_yaml(b, {"shape": "square", "top": "orange"})
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"subjects": [str(a), str(b)], "output_dir": str(tmp_path / "out"),
                                   "backbone": "tiny-sd", "scorers": ["toyworld"]}))
    assert main(["run", str(run)]) == 2
    assert not (tmp_path / "out").exists()
