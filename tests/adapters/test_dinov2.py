"""DINOv2 embedder: Embedder contract, determinism, batching, loading from a local folder, honest errors."""

import numpy as np
import pytest
import torch

from mudi.adapters.base import Embedder
from mudi.adapters.dinov2 import Dinov2Embedder, preprocess_images
from mudi.errors import MudiError


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (30 + 7 * i, 50 - 3 * i, 3), dtype=np.uint8) for i in range(n)]


def test_contract_shape_norm_dtype():
    emb = Dinov2Embedder.build_tiny()
    assert isinstance(emb, Embedder) and emb.name == "dinov2"
    out = emb.embed(_images(3))
    assert out.shape == (3, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert emb.embed([]).shape == (0, 32)


def test_embedding_is_mean_of_all_output_tokens():
    emb = Dinov2Embedder.build_tiny()
    imgs = _images(2)
    px = preprocess_images(imgs, emb.resize_size, emb.crop_size, emb.mean, emb.std)
    with torch.no_grad():
        tokens = emb.model(pixel_values=px).last_hidden_state
    assert tokens.shape[1] == 1 + (28 // 7) ** 2  # class token + patches
    expected = torch.nn.functional.normalize(tokens.mean(1), dim=-1)
    assert torch.allclose(emb.embed(imgs), expected, atol=1e-6)


def test_tiny_build_is_deterministic_and_batch_size_invariant():
    a, b = Dinov2Embedder.build_tiny(batch_size=1), Dinov2Embedder.build_tiny(batch_size=4)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    imgs = _images(5)
    assert torch.allclose(a.embed(imgs), b.embed(imgs), atol=1e-5)
    # Different images give different embeddings (the model is not degenerate).
    out = b.embed(imgs)
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_preprocess_resizes_shorter_side_and_centre_crops():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre square is white
    px = preprocess_images([img], resize_size=20, crop_size=20, mean=(0, 0, 0), std=(1, 1, 1))
    assert px.shape == (1, 3, 20, 20)
    assert px.min() > 0.9  # the centre crop of a 20x40 resize is all white


def test_from_pretrained_local_folder_roundtrip(tmp_path):
    tiny = Dinov2Embedder.build_tiny()
    tiny.model.save_pretrained(tmp_path / "dino")
    loaded = Dinov2Embedder.from_pretrained(str(tmp_path / "dino"))
    loaded.resize_size, loaded.crop_size = tiny.resize_size, tiny.crop_size
    imgs = _images(2)
    assert torch.allclose(loaded.embed(imgs), tiny.embed(imgs), atol=1e-6)


def test_missing_checkpoint_is_a_mudi_error(tmp_path):
    with pytest.raises(MudiError, match="hf download"):
        Dinov2Embedder.from_pretrained(str(tmp_path / "no-such-dinov2"))


@pytest.mark.parametrize("hw", [(300, 420), (500, 260), (256, 256)])
def test_torch_preprocessing_matches_the_transformers_processor(hw):
    """DINOv2's processor (BitImageProcessor: shortest edge 256, bicubic, centre crop 224, ImageNet mean/std) and
    mudi's torch version agree within 0.01 on average and 0.05 at worst, in normalised units (one grey level is
    ~0.017): half a grey level on average, three at worst (measured: 0.004 / 0.018 on these images)."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    from mudi.adapters.dinov2 import preprocess_images

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    proc = BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                do_center_crop=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True)
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx * 9 / w) * np.cos(yy * 7 / h)], -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    ref = torch.as_tensor(np.asarray(proc(images=[img], return_tensors="np")["pixel_values"]))
    ours = preprocess_images([img], resize_size=256, crop_size=224, mean=mean, std=std)
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    diff = (ours - ref).abs()
    assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.05, (float(diff.mean()), float(diff.max()))
