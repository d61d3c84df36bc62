"""The toy world's own describer (registered as ``describer: toyworld``): it reads each photo with the world's
checker, so its answer is the ground truth, and ``mudi describe`` can be tested end to end with a known answer.

The descriptive class is the world's words for the subject ("red yellow square", what
:attr:`~mudi.toyworld.world.ToySubject.descriptive_class` says); each photo's caption is the world's caption
of that photo with the subject named by its phrase: ``"a photo of a olis red yellow square, simple
background."`` on a white background, without the suffix on a tinted one. Every word is in the toy model's
vocabulary. The reply is the same JSON a vision-language model is asked for (:mod:`mudi.adapters.describers`).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mudi.adapters.describers import DescribeRequest
from mudi.toyworld.checker import as_rgb_uint8, background_colour, detect_objects
from mudi.toyworld.world import WHITE, caption_objects


def read_photo(image: np.ndarray) -> tuple[str | None, bool]:
    """``(identity phrase of the largest object or None, is the background white)`` of one photo."""
    rgb = as_rgb_uint8(image)
    found = detect_objects(rgb)
    is_white = bool(np.all(np.abs(background_colour(rgb) - np.asarray(WHITE, np.float32)) < 1.0))
    return (found[0].phrase if found else None), is_white


class ToyworldDescriber:
    """Answers :class:`~mudi.adapters.describers.DescribeRequest` from the pixels with the world's checker."""

    name = "toyworld"

    @classmethod
    def build(cls) -> ToyworldDescriber:
        return cls()

    def describe(self, request: DescribeRequest) -> str:
        subjects = {}
        for s in request.subjects:
            seen = [read_photo(image) for image in s.images]
            phrases = Counter(p for p, _ in seen if p)
            desc = request.keep.get(s.identifier) or (phrases.most_common(1)[0][0] if phrases else s.class_noun)
            captions = {name: caption_objects([f"{s.identifier} {desc}"], simple_background=white)
                        for name, (_, white) in zip(s.file_names, seen)}
            subjects[s.identifier] = {"descriptive_class": desc, "captions": captions}
        return json.dumps({"subjects": subjects})
