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
    assert segmix_prompt(["olis corgi", "hta chow chow"]) == "A photo of olis corgi and hta chow chow, simple background."
    assert segmix_prompt(["a x", "b y", "c z"]) == "A photo of a x, b y and c z, simple background."
    assert segmix_prompt(["a x", "b y", "c z"], use_count_prefix=True).startswith("3 objects: A photo of a x, b y")


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
