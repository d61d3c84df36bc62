"""Subject-set loading: native format, the MuDI benchmark format, image modes, EXIF, bad input."""

import numpy as np
import pytest
from PIL import Image

from mudi.data.images import read_image, read_mask
from mudi.data.subjects import find_subjects, load_subjects
from mudi.errors import MudiError
from mudi.samples import sample_subject_dirs
from tests.helpers import make_subject_dir


def test_native_subject(tmp_path):
    d = make_subject_dir(tmp_path, "robot", "amg", "toy", descriptive_class="white robot toy")
    (s,) = find_subjects(d)
    assert s.phrase == "amg white robot toy" and s.class_noun == "toy" and len(s.images) == 3
    rgb, mask = s.load(0)
    assert rgb.shape == (80, 96, 3) and mask.shape == (80, 96) and mask.dtype == bool
    cut = s.cutouts(max_side=None)[0]
    assert cut.mask.all() or cut.mask.mean() > 0.99  # a rectangle mask crops to itself


def test_folder_of_subjects_and_samples():
    subs = load_subjects([p for p in sample_subject_dirs()])
    assert {s.name for s in subs} == {"dog6", "dog2", "cat2"}
    assert all(len(s.cutouts()) == 4 for s in subs)
    subs2 = find_subjects(sample_subject_dirs()[0].parent)
    assert len(subs2) == 3


def test_benchmark_pair_format(benchmark_dir):
    subs = find_subjects(benchmark_dir / "pairs" / "dog6_and_dog2")
    assert [s.name for s in subs] == ["dog6", "dog2"]
    assert [s.phrase for s in subs] == ["olis corgi", "hta chow chow"]
    assert subs[0].images[0].caption.startswith("A photo of a olis corgi")
    rgb, mask = subs[0].load(0)
    assert mask.shape == rgb.shape[:2] and 0.02 < mask.mean() < 0.9


def test_all_benchmark_pairs_load(benchmark_dir):
    for pair in sorted((benchmark_dir / "pairs").iterdir()):
        subs = find_subjects(pair)
        assert len(subs) >= 2
        for s in subs:
            rgb, mask = s.load(0)
            assert mask is not None and mask.any()
    five = find_subjects(benchmark_dir / "pairs" / "count_ablation")
    assert len(five) == 5 and five[3].phrase == "amg white robot toy"


def test_prior_set_format(benchmark_dir):
    subs = find_subjects(benchmark_dir / "priors" / "actionfigure_2_and_dog0")
    assert [s.class_name for s in subs] == ["harry potter toy", "Corgi"]
    assert all(s.identifier == "" for s in subs) and len(subs[0].images) > 10


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P"])
def test_image_modes_read_as_rgb(tmp_path, mode):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    path = tmp_path / ("x.jpg" if mode in ("CMYK", "L") else "x.png")
    img.save(path)
    rgb, alpha, _ = read_image(path)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8 and alpha is None


def test_rgba_alpha_serves_as_mask(tmp_path):
    arr = np.zeros((20, 30, 4), np.uint8)
    arr[..., :3] = 100
    arr[5:15, 10:20, 3] = 255
    Image.fromarray(arr, "RGBA").save(tmp_path / "00.png")
    (tmp_path / "subject.yaml").write_text("identifier: qwe\nclass_noun: toy\n")
    (s,) = find_subjects(tmp_path)
    _, mask = s.load(0)
    assert mask.sum() == 100 and mask[5:15, 10:20].all()


def test_webp_and_16bit_png(tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.webp", lossless=True)
    rgb, _, _ = read_image(tmp_path / "a.webp")
    assert np.array_equal(rgb, arr)
    m16 = np.zeros((16, 24), np.uint16)
    m16[4:12, 6:18] = 65535
    Image.fromarray(m16).save(tmp_path / "m16.png")
    mask = read_mask(tmp_path / "m16.png", image_size_wh=(24, 16))
    assert mask.sum() == 8 * 12
    grey16 = (np.linspace(0, 65535, 16 * 24).reshape(16, 24)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    rgb16, _, _ = read_image(tmp_path / "g16.png")
    assert rgb16.max() == 255 and rgb16.min() == 0


def test_exif_orientation_applied_to_image_and_raw_mask(tmp_path):
    raw = np.zeros((20, 40, 3), np.uint8)  # landscape on disk
    raw[:, :10] = 255  # white stripe on the left of the raw pixels
    img = Image.fromarray(raw)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "00.jpg", exif=exif.tobytes(), quality=95)
    m = np.zeros((20, 40), np.uint8)
    m[:, :10] = 255  # mask drawn on the raw (un-rotated) pixels
    Image.fromarray(m).save(tmp_path / "mask_raw.png")
    rgb, _, raw_img = read_image(tmp_path / "00.jpg")
    assert rgb.shape == (40, 20, 3)  # portrait after orientation
    mask = read_mask(tmp_path / "mask_raw.png", tmp_path / "00.jpg", (20, 40), raw_img)
    assert mask.shape == (40, 20)
    assert np.array_equal(mask, rgb.mean(2) > 127)  # the mask follows the image's rotation


def test_bad_inputs(tmp_path):
    with pytest.raises(MudiError, match="no such folder"):
        find_subjects(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "subject.yaml").write_text("identifier: abc\nclass_noun: dog\n")
    with pytest.raises(MudiError, match="no reference images"):
        find_subjects(empty)
    d = make_subject_dir(tmp_path, "a", "zzz")
    (d / "01.png").write_bytes((d / "01.png").read_bytes()[:200])  # truncated
    with pytest.raises(MudiError, match="01.png.*truncated"):
        find_subjects(d)[0].load(1)
    d2 = make_subject_dir(tmp_path, "b", "yyy")
    Image.new("L", (10, 10), 255).save(d2 / "masks" / "00.png")
    with pytest.raises(MudiError, match="mask is 10x10 but its image"):
        find_subjects(d2)[0].load(0)
    d3 = make_subject_dir(tmp_path, "c", "xxx")
    Image.new("L", (96, 80), 0).save(d3 / "masks" / "00.png")
    with pytest.raises(MudiError, match="mask is empty"):
        find_subjects(d3)[0].load(0)
    d4 = make_subject_dir(tmp_path, "d", "zzz")
    with pytest.raises(MudiError, match="share the identifier 'zzz'"):
        load_subjects([d, d4])
    d5 = make_subject_dir(tmp_path, "e", "www")
    (d5 / "subject.yaml").write_text("identifer: www\nclass_noun: dog\n")
    with pytest.raises(MudiError, match="unknown key"):
        find_subjects(d5)
