"""No prompt or caption mudi writes for the toy model is cut by its tokenizer (issue 24, item 1): every text the
trainer, the prior stage, the sampler, the demo, the UI preset and the lab build for every shipped toy subject set
fits the shipped model's ``model_max_length``, and its text encoder has that many positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mudi.core.prompts import (
    cutmix_prompt,
    fill_placeholders,
    instance_prompt,
    prior_caption,
    prior_prompt,
    segmix_prompt,
)
from mudi.data.subjects import load_subjects
from mudi.sampling.config import GenerateConfig
from mudi.toyworld import MODEL_DIR, SUBJECTS_DIR
from mudi.toyworld.sets import SUBJECT_SETS, subject_folders

DEMO = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples" / "demo-toyworld.yaml"


def _texts(subjects: list) -> list[str]:
    """Every text mudi builds from these subjects: captions (Seg-Mix with and without the count prefix, Cut-Mix,
    one subject), the prior prompt and caption of each class, the demo's and the lab's prompts."""
    phrases = [s.phrase for s in subjects]
    demo = yaml.safe_load(DEMO.read_text())
    templates = list(demo["prompts"]) + list(demo["train"].get("validation_prompts", []))
    texts = [segmix_prompt(phrases), segmix_prompt(phrases, use_count_prefix=True), cutmix_prompt(phrases)]
    texts += [fill_placeholders(t, phrases[:2]) for t in templates]
    texts.append("a photo of " + " and ".join(f"a {p}" for p in phrases) + ".")  # the lab's prompt
    for s in subjects:
        texts += [instance_prompt(s.phrase), prior_prompt(s.class_name), prior_caption(s.class_name),
                  prior_prompt(s.class_noun)]
    return texts


@pytest.mark.parametrize("set_name", list(SUBJECT_SETS))
def test_no_toy_prompt_or_caption_is_truncated(set_name):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(MODEL_DIR / "tokenizer"))
    positions = json.loads((MODEL_DIR / "text_encoder" / "config.json").read_text())["max_position_embeddings"]
    assert tokenizer.model_max_length <= positions
    subjects = load_subjects([str(p) for p in subject_folders(SUBJECTS_DIR, set_name)])
    texts = _texts(subjects) + [GenerateConfig().negative_prompt or ""]
    longest = max(texts, key=lambda t: len(tokenizer(t).input_ids))
    assert len(tokenizer(longest).input_ids) <= tokenizer.model_max_length, longest
