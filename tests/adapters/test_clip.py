"""CLIP image embedder and CLIP score: contracts, exact cosine, order averaging, honest errors."""

import numpy as np
import pytest
import torch

from mudi.adapters.base import Embedder
from mudi.adapters.clip import ClipEmbedder, ClipScorer, build_tiny_clip
from mudi.errors import MudiError


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 30 + 5 * i, 3), dtype=np.uint8) for i in range(n)]


def _feat(out):
    return out if torch.is_tensor(out) else out.pooler_output


def test_embedder_contract():
    emb = ClipEmbedder.build_tiny()
    assert isinstance(emb, Embedder) and emb.name == "clip"
    out = emb.embed(_images(3))
    assert out.shape == (3, 16) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_tiny_build_is_deterministic():
    (m1, _), (m2, _) = build_tiny_clip(), build_tiny_clip()
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_clip_score_is_the_cosine_of_image_and_text_features():
    scorer = ClipScorer.build_tiny()
    imgs, prompts = _images(2), ["A photo of a monster toy and a can.", "A photo of a can and a monster toy."]
    scores = scorer.score(imgs, prompts)
    tok = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    from mudi.adapters.clip import CLIP_MEAN, CLIP_STD
    from mudi.adapters.dinov2 import preprocess_images

    px = preprocess_images(imgs, 32, 32, CLIP_MEAN, CLIP_STD)
    with torch.no_grad():
        i = torch.nn.functional.normalize(_feat(scorer.model.get_image_features(pixel_values=px)), dim=-1)
        t = torch.nn.functional.normalize(_feat(scorer.model.get_text_features(**tok)), dim=-1)
    assert scores == pytest.approx((i * t).sum(-1).tolist(), abs=1e-5)
    # The word order matters to CLIP's text encoder: the two orders give different text embeddings.
    e = scorer.embed_text(prompts)
    assert (e[0] - e[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="prompts"):
        scorer.score(imgs, prompts[:1])


def test_text_scores_average_over_orders():
    from mudi.scoring.text import text_scores

    scorer = ClipScorer.build_tiny()
    imgs = _images(2)
    orders = [["a toy and a can", "a can and a toy"], ["a dog"]]
    got = text_scores(scorer, imgs, orders)
    assert got[0] == pytest.approx(np.mean(scorer.score([imgs[0]] * 2, orders[0])), abs=1e-6)
    assert got[1] == pytest.approx(scorer.score([imgs[1]], orders[1])[0], abs=1e-6)


def test_local_folder_roundtrip(tmp_path):
    tiny = ClipScorer.build_tiny()
    tiny.model.save_pretrained(tmp_path / "clip")
    tiny.tokenizer.save_pretrained(tmp_path / "clip")
    loaded = ClipScorer.from_pretrained(str(tmp_path / "clip"))
    imgs = _images(1)
    assert loaded.score(imgs, ["a red toy"]) == pytest.approx(tiny.score(imgs, ["a red toy"]), abs=1e-6)


def test_missing_checkpoint_is_a_mudi_error(tmp_path):
    with pytest.raises(MudiError, match="CLIP checkpoint"):
        ClipEmbedder.from_pretrained(str(tmp_path / "missing"))
