"""The real loading path (`from_pretrained` on a local diffusers folder), exercised offline: each tiny pipeline is
saved with `save_pretrained` and loaded back through `load_backbone(<family>, folder)`."""

import pytest
import torch

from mudi.adapters.registry import load_backbone
from mudi.errors import MudiError

PAIRS = [("sd15", "tiny-sd"), ("sd2", "tiny-sd2"), ("sdxl", "tiny-sdxl"), ("flux", "tiny-flux")]


def _image(bb, size):
    out = bb.pipeline(prompt="a photo of a dog", num_inference_steps=2, height=size, width=size,
                      generator=torch.Generator().manual_seed(0), output_type="np")
    return torch.from_numpy(out.images[0])


@pytest.mark.parametrize("family,tiny", PAIRS)
def test_saved_pipeline_loads_through_the_family_adapter(tmp_path, family, tiny):
    tiny_bb = load_backbone(tiny)
    folder = tmp_path / family
    tiny_bb.pipeline.save_pretrained(folder)
    bb = load_backbone(family, str(folder))
    assert bb.family == family and type(bb.pipeline) is type(tiny_bb.pipeline)
    if family != "flux":  # SD/SDXL read it from the UNet config; FLUX's config has none: 1024
        assert bb.default_resolution == tiny_bb.default_resolution
    size = tiny_bb.default_resolution
    # same weights, same images (FLUX differs in the last float bits: ~3e-6 after a save/load round trip)
    assert torch.allclose(_image(bb, size), _image(tiny_bb, size), atol=1e-5, rtol=0)


def test_family_mismatch_and_broken_folder(tmp_path):
    folder = tmp_path / "sd"
    load_backbone("tiny-sd").pipeline.save_pretrained(folder)
    with pytest.raises(MudiError, match="sd"):
        load_backbone("sdxl", str(folder))
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(MudiError, match="cannot load the sd15 checkpoint in"):
        load_backbone("sd15", str(folder))
