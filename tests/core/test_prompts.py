import pytest

from mudi.core.prompts import (
    count_prefix,
    fill_placeholders,
    join_subjects,
    placeholder_count,
    segmix_prompt,
    subject_phrase,
)


def test_segmix_prompt_two_and_three():
    # the authors' caption: "a photo of a {A} and a {B}, simple background."
    assert segmix_prompt(["olis corgi", "hta chow chow"]) == \
        "a photo of a olis corgi and a hta chow chow, simple background."
    assert segmix_prompt(["x", "y", "z"]) == "a photo of a x, a y and a z, simple background."
    assert segmix_prompt(["x", "y", "z"], use_count_prefix=True).startswith("3 objects: a photo of a x, a y")
    legacy = dict(template="A photo of {subjects}, simple background.", subject_prefix="")
    assert segmix_prompt(["a x", "b y"], **legacy) == "A photo of a x and b y, simple background."
    flux = segmix_prompt(["x", "y"], template="a close out photo of {subjects}, {background} simple background.",
                         subject_prefix="a small ", background="black")
    assert flux == "a close out photo of a small x and a small y, black simple background."


def test_phrase_and_join():
    assert subject_phrase("olis", "corgi") == "olis corgi"
    assert subject_phrase("", "corgi") == "corgi"
    assert join_subjects(["a"]) == "a"
    assert count_prefix(4, "animals") == "4 animals: "
    with pytest.raises(ValueError):
        join_subjects([])


def test_placeholders():
    assert fill_placeholders("[V1] and [V2] at the beach.", ["olis corgi", "hta dog"]) == \
        "olis corgi and hta dog at the beach."
    assert placeholder_count("[V1], [V3]") == 3
    with pytest.raises(ValueError, match=r"\[V3\]"):
        fill_placeholders("[V3] alone", ["a", "b"])
