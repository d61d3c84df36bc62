"""The toy world: deterministic scenes, masks that match the pixels, captions, the checker and its
calibration, subject folders mudi loads, and the shipped pretrained model's base score."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mudi.errors import MudiError
from mudi.toyworld.checker import calibrate, check_image, classify_shape, detect_objects
from mudi.toyworld.world import (
    COLOURS,
    DEMO_SUBJECTS,
    IDENTIFIERS,
    PALETTE,
    WHITE,
    ObjectSpec,
    Scene,
    caption_objects,
    caption_scene,
    caption_vocabulary,
    render_scene,
    sample_dataset,
    sample_scene,
    write_subject_folder,
)


def _scene(*objects: ObjectSpec, background=WHITE) -> Scene:
    return Scene(tuple(objects), background)


RED_YELLOW = ObjectSpec("square", "red", "yellow", 13, 9.5, 16.5)
BLUE_YELLOW = ObjectSpec("square", "blue", "yellow", 13, 23.5, 16.5)


# -------------------------------------------------------------------------------------------------- world
def test_dataset_is_deterministic_given_the_seed():
    a_images, a_captions, _ = sample_dataset(40, seed=3)
    b_images, b_captions, _ = sample_dataset(40, seed=3)
    c_images, _, _ = sample_dataset(40, seed=4)
    assert a_images.shape == (40, 32, 32, 3) and a_images.dtype == np.uint8
    assert np.array_equal(a_images, b_images) and a_captions == b_captions
    assert not np.array_equal(a_images, c_images)


def test_masks_match_pixels():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = sample_scene(rng)
        image, masks = render_scene(scene)
        assert len(masks) == len(scene.objects)
        union = np.zeros(image.shape[:2], bool)
        for spec, mask in zip(scene.objects, masks):
            assert mask.dtype == bool and mask.sum() > 20
            assert not (mask & union).any()  # objects never overlap
            union |= mask
            interior = ndimage.binary_erosion(mask)
            allowed = np.array([PALETTE[c] for c in spec.colours])
            pix = image[interior].astype(int)
            dist = np.abs(pix[:, None, :] - allowed[None]).sum(-1).min(-1)
            # interior pixels are the object's flat colours, except the one row where two colours meet
            assert (dist == 0).mean() > 0.8
        outside = ~ndimage.binary_dilation(union)
        assert (image[outside] == np.array(scene.background, np.uint8)).all()


def test_two_colour_object_is_top_over_bottom():
    image, (mask,) = render_scene(_scene(ObjectSpec("square", "red", "blue", 12, 16, 16)))
    assert tuple(image[11, 16]) == PALETTE["red"] and tuple(image[20, 16]) == PALETTE["blue"]
    assert mask[10:22, 10:22].all() and mask.sum() == 144


def test_caption_format():
    objs = (ObjectSpec("square", "red", "blue"), ObjectSpec("circle", "green"))
    assert caption_objects(objs) == "a photo of a red blue square and a green circle."
    simple = caption_objects(objs[1:], simple_background=True)
    assert simple == "a photo of a green circle, simple background."
    assert caption_objects(["olis square", "hta square"]) == "a photo of a olis square and a hta square."
    vocab = set(caption_vocabulary())
    rng = np.random.default_rng(1)
    for _ in range(200):
        scene = sample_scene(rng)
        words = caption_scene(scene).replace(",", " , ").replace(".", " . ").split()
        assert set(words) <= vocab
        if scene.simple_background:
            assert scene.background == WHITE
    assert not vocab & set(IDENTIFIERS)


def test_object_spec_rejects_bad_input():
    with pytest.raises(MudiError, match="shape"):
        ObjectSpec("hexagon", "red")
    with pytest.raises(MudiError, match="colour"):
        ObjectSpec("square", "pink")
    with pytest.raises(MudiError, match="bottom=None"):
        ObjectSpec("square", "red", "red")


def test_word_tokenizer_has_one_token_per_word_and_special_tokens_last():
    from mudi.toyworld.tokenizer import build_word_tokenizer, word_token_ids

    words = caption_vocabulary() + list(IDENTIFIERS)
    tok = build_word_tokenizer(words, model_max_length=32)
    ids = word_token_ids(tok, words)
    assert len(set(ids)) == len(words)
    assert tok.bos_token_id == len(tok) - 2 and tok.eos_token_id == len(tok) - 1
    enc = tok("a photo of a red blue square and a green circle, simple background.")["input_ids"]
    assert len(enc) == 2 + 15  # bos, 15 words and marks, eos
    assert len(tok("olis playing")["input_ids"]) > 3  # unknown words fall back to characters


# ------------------------------------------------------------------------------------------------ checker
def test_checker_reads_a_scene():
    spec = ObjectSpec("triangle", "purple", "cyan", 14, 8, 9)
    image, masks = render_scene(_scene(spec, ObjectSpec("circle", "green", None, 10, 24, 24),
                                       background=(240, 235, 228)))
    found = detect_objects(image)
    assert [o.phrase for o in found] == ["purple cyan triangle", "green circle"]
    assert found[0].box_xyxy == (1, 3, 15, 16)  # the apex row is under half covered
    assert np.array_equal(found[0].mask, masks[0]) and np.array_equal(found[1].mask, masks[1])
    expected = [ObjectSpec("circle", "green"), ObjectSpec("triangle", "purple", "cyan")]
    assert check_image(image, expected).is_correct


@pytest.mark.parametrize("drawn, verdict", [
    ((RED_YELLOW, BLUE_YELLOW), "correct"),
    ((RED_YELLOW,), "missing"),
    ((RED_YELLOW, BLUE_YELLOW, ObjectSpec("circle", "green", None, 6, 16, 4)), "extra"),
    ((RED_YELLOW, ObjectSpec("square", "red", "yellow", 13, 23.5, 16.5)), "duplicate"),
    ((RED_YELLOW, ObjectSpec("square", "blue", "red", 13, 23.5, 16.5)), "blend"),
    ((RED_YELLOW, ObjectSpec("circle", "blue", "yellow", 13, 23.5, 16.5)), "wrong_shape"),
    ((RED_YELLOW, ObjectSpec("square", "blue", "green", 13, 23.5, 16.5)), "wrong_colour"),
])
def test_checker_verdicts(drawn, verdict):
    image, _ = render_scene(_scene(*drawn))
    assert check_image(image, [RED_YELLOW, BLUE_YELLOW]).verdict == verdict


def test_checker_shape_classifier_on_ground_truth_masks():
    for size in (9, 10, 13, 16):
        for shape in ("circle", "square", "triangle"):
            for cx in (15.0, 15.5):
                _, (mask,) = render_scene(_scene(ObjectSpec(shape, "red", None, size, cx, cx)))
                ys, xs = np.nonzero(mask)
                crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                assert classify_shape(crop) == shape, (shape, size, cx)


def test_checker_calibration_on_ground_truth():
    cal = calibrate(num_images=150, seed=0)
    assert cal[1]["n"] == 150 and cal[2]["n"] == 150
    assert cal[1]["accuracy"] >= 0.99 and cal[2]["accuracy"] >= 0.98, cal


def test_checker_accepts_float_and_larger_images():
    image, _ = render_scene(_scene(RED_YELLOW))
    big = np.kron(image, np.ones((4, 4, 1), np.uint8))
    for im in (image / 255.0, big):
        assert [o.phrase for o in detect_objects(im)] == ["red yellow square"]
    with pytest.raises(MudiError, match="RGB"):
        detect_objects(image[..., 0])


# ----------------------------------------------------------------------------------------------- subjects
def test_subject_folder_loads_in_mudi(tmp_path):
    from mudi.data.subjects import load_subjects

    folders = [write_subject_folder(s, tmp_path / s.name, num_images=4, seed=i)
               for i, s in enumerate(DEMO_SUBJECTS)]
    subjects = load_subjects(folders)
    assert [s.identifier for s in subjects] == ["olis", "hta"]
    assert subjects[0].class_noun == "square" and subjects[0].phrase == "olis red yellow square"
    for spec, subject in zip(DEMO_SUBJECTS, subjects):
        assert len(subject.images) == 4
        for i in range(4):
            rgb, mask = subject.load(i)
            assert rgb.shape == (32, 32, 3) and mask is not None and mask.sum() > 50
            (found,) = detect_objects(rgb)
            assert (found.shape, found.top, found.bottom) == (spec.shape, spec.top, spec.bottom)
            assert (found.mask & mask).sum() / (found.mask | mask).sum() > 0.9
    assert set(COLOURS) >= {"red", "blue", "yellow"}


# ------------------------------------------------------------------------------------------ shipped model
def test_shipped_model_base_scores():
    """The shipped checkpoint (toy model v2.2) loads as a 32-px StableDiffusionPipeline with CLIP's 77 text
    positions and still draws what it is asked for: on 32 prompts of each kind (CFG 4, 20 DDIM steps) it scored 1.00
    with one object and 0.81 with two when shipped (MODEL_CARD.md: 1.00 and 0.75 on 256 at 30 steps; v2.1 scored
    0.99 and 0.70, v2 0.98 and 0.66, v1 0.89 and 0.29 there); the floors leave room for other CPUs' arithmetic and
    stay above what v1 drew with two objects.
    The issue's size limit: 20 MB."""
    import torch

    from mudi.toyworld import MODEL_DIR
    from mudi.toyworld.pretrain import base_scores, load_toyworld_pipeline

    torch.set_num_threads(1)
    pipe = load_toyworld_pipeline(MODEL_DIR)
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.sample_size == 16
    assert pipe.tokenizer.model_max_length == 77 == pipe.text_encoder.config.max_position_embeddings
    assert sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file()) <= 20 * 2**20
    one = base_scores(pipe, num_objects=1, num_images=32, seed=0, guidance_scale=4.0, num_inference_steps=20,
                      batch_size=16)
    two = base_scores(pipe, num_objects=2, num_images=32, seed=0, guidance_scale=4.0, num_inference_steps=20,
                      batch_size=16)
    assert one["accuracy"] >= 0.85 and two["accuracy"] >= 0.4, (one, two)


def test_shipped_demo_subjects_are_the_world_renders(tmp_path):
    from mudi.toyworld import SUBJECTS_DIR

    for i, subject in enumerate(DEMO_SUBJECTS):
        fresh = write_subject_folder(subject, tmp_path / subject.name, num_images=4, seed=i)
        shipped = SUBJECTS_DIR / subject.name
        names = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file())
        for name in names:
            if name.endswith(".png"):
                fresh_px = np.asarray(Image.open(fresh / name))
                assert np.array_equal(fresh_px, np.asarray(Image.open(shipped / name))), name
            else:
                assert (fresh / name).read_text() == (shipped / name).read_text()


# ------------------------------------------------------------------------------------------- pretraining
def _tiny_pretrain_config():
    from mudi.toyworld.pretrain import PretrainConfig

    return PretrainConfig(num_images=32, vae_steps=2, vae_batch_size=4, steps=4, batch_size=4, warmup_steps=2,
                          checkpoint_every=2)


def test_pretrain_resumes_to_the_same_model(tmp_path, monkeypatch):
    """A run that crashes after its first denoiser checkpoint and is rerun equals an uninterrupted one."""
    import torch
    from safetensors.torch import load_file

    from mudi.toyworld import pretrain

    torch.set_num_threads(1)
    cfg = _tiny_pretrain_config()
    folder = pretrain.run(cfg, tmp_path / "straight")
    assert (folder / "model_index.json").is_file() and (tmp_path / "straight" / "pipeline_fp32").is_dir()

    real_save = pretrain.atomic_save

    def crash_after_first_denoiser_checkpoint(obj, path):
        real_save(obj, path)
        if path.name == "denoiser.pt":
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(pretrain, "atomic_save", crash_after_first_denoiser_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cfg, tmp_path / "resumed")
    monkeypatch.setattr(pretrain, "atomic_save", real_save)
    pretrain.run(cfg, tmp_path / "resumed")
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors"):
        a = load_file(tmp_path / "straight" / "pipeline_fp32" / part)
        b = load_file(tmp_path / "resumed" / "pipeline_fp32" / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    pipe = pretrain.load_toyworld_pipeline(folder)
    assert pipe.vae_scale_factor == 2 and pipe.tokenizer.model_max_length == pretrain.TEXT_LENGTH
    scenes, images = pretrain.generate_scenes(pipe, 1, 2, num_inference_steps=2)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_pretrain_v2_settings_reach_the_model(tmp_path):
    """The v2 recipe's knobs (benchmarks/toyworld_pretrain_v2.yaml, the shipped model's: PretrainConfig's defaults;
    v1's recipe is a file beside it): the text length becomes the tokenizer's and the text encoder's positions (a
    77-token prompt is not cut), the two-object share the training scenes'."""
    import dataclasses

    import torch
    import yaml

    from mudi.toyworld import pretrain

    torch.set_num_threads(1)
    recipe = yaml.safe_load((Path(__file__).parents[1] / "benchmarks" / "toyworld_pretrain_v2.yaml").read_text())
    assert set(recipe) <= {f.name for f in dataclasses.fields(pretrain.PretrainConfig)}  # every key is a setting
    defaults = dataclasses.asdict(pretrain.PretrainConfig())
    assert all(defaults[k] == v for k, v in recipe.items()), (recipe, defaults)  # the defaults make the shipped model
    v1 = yaml.safe_load((Path(__file__).parents[1] / "benchmarks" / "toyworld_pretrain_v1.yaml").read_text())
    assert pretrain.PretrainConfig(**v1).text_length == 32 and set(v1) == set(recipe)
    v3 = yaml.safe_load((Path(__file__).parents[1] / "benchmarks" / "toyworld_pretrain_v3.yaml").read_text())
    v3_cfg = pretrain.PretrainConfig(**v3)  # the candidate's recipe: v2's stage-1 settings, so its VAE is reusable
    assert v3_cfg.full_resolution_attention and all(getattr(v3_cfg, k) == defaults[k] for k in pretrain.VAE_FIELDS)
    cfg = dataclasses.replace(_tiny_pretrain_config(), text_length=recipe["text_length"], two_object_prob=1.0)
    pipe = pretrain.load_toyworld_pipeline(pretrain.run(cfg, tmp_path / "v2"))
    assert pipe.tokenizer.model_max_length == 77 == pipe.text_encoder.config.max_position_embeddings
    info = json.loads((tmp_path / "v2" / "work" / "config.json").read_text())
    assert info["two_object_prob"] == 1.0
    with pytest.raises(MudiError, match="two_object_prob"):
        pretrain.PretrainConfig(two_object_prob=1.5)


def test_pretrain_architecture_settings_reach_the_model(tmp_path):
    """v3's knobs: ``text_layers`` is the text encoder's depth, ``full_resolution_attention`` puts cross-attention
    in the 16×16 blocks too; the defaults build v2's networks (the shipped model's)."""
    import dataclasses

    import torch

    from mudi.toyworld import pretrain

    torch.set_num_threads(1)
    v2 = pretrain.build_unet()
    assert v2.config.down_block_types[0] == "DownBlock2D" and v2.config.up_block_types[-1] == "UpBlock2D"
    cfg = dataclasses.replace(_tiny_pretrain_config(), text_layers=2, full_resolution_attention=True)
    pipe = pretrain.load_toyworld_pipeline(pretrain.run(cfg, tmp_path / "v3"))
    assert pipe.text_encoder.config.num_hidden_layers == 2
    assert list(pipe.unet.config.down_block_types) == ["CrossAttnDownBlock2D"] * 3
    assert list(pipe.unet.config.up_block_types) == ["CrossAttnUpBlock2D"] * 3
    assert len(pipe.unet.attn_processors) > len(v2.attn_processors)


def test_checkpoint_scores_read_a_run_in_progress(tmp_path, monkeypatch, capsys):
    """benchmarks/toyworld_checkpoint_scores.py scores the EMA weights of a work folder's checkpoint with the
    networks its config.json describes, and refuses a checkpoint that does not fit them."""
    import dataclasses
    import runpy

    import torch

    from mudi.toyworld import pretrain

    torch.set_num_threads(1)
    cfg = dataclasses.replace(_tiny_pretrain_config(), full_resolution_attention=True)
    pretrain.run(cfg, tmp_path / "run")
    script = str(Path(__file__).parents[1] / "benchmarks" / "toyworld_checkpoint_scores.py")
    argv = [script, "--work", str(tmp_path / "run" / "work"), "--pipeline", str(tmp_path / "run" / "pipeline_fp32"),
            "--num_images", "2", "--steps", "2"]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(script, run_name="__main__")
    assert re.search(r"step 4: two objects \d\.\d{3} \(n=2\)", capsys.readouterr().out)
    config = tmp_path / "run" / "work" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "full_resolution_attention": False}))
    with pytest.raises(SystemExit, match="does not fit"):
        runpy.run_path(script, run_name="__main__")


def test_pretrain_refuses_to_resume_under_other_settings(tmp_path):
    """A work folder resumes only under the settings its checkpoints were made with; a stage not yet trained may
    differ (v3 reuses v2's VAE and latents), and a config.json without a newer key reads it as its default."""
    import dataclasses
    import shutil

    import torch

    from mudi.toyworld import pretrain

    torch.set_num_threads(1)
    cfg = _tiny_pretrain_config()
    pretrain.run(cfg, tmp_path / "a")
    with pytest.raises(MudiError, match=r"steps: 4 -> 6"):
        pretrain.run(dataclasses.replace(cfg, steps=6), tmp_path / "a")
    with pytest.raises(MudiError, match=r"vae\.pt was made with other settings \(vae_lr"):
        pretrain.check_resumable(dataclasses.replace(cfg, vae_lr=1e-2), tmp_path / "a" / "work")
    pretrain.check_resumable(dataclasses.replace(cfg, checkpoint_every=3, save_dtype="float32"),
                             tmp_path / "a" / "work")  # settings the weights do not depend on
    work = tmp_path / "b" / "work"
    work.mkdir(parents=True)
    for name in ("config.json", "vae.pt", "latents.pt"):
        shutil.copy(tmp_path / "a" / "work" / name, work / name)
    saved = json.loads((work / "config.json").read_text())
    del saved["text_layers"], saved["full_resolution_attention"]  # as a folder made before these settings
    (work / "config.json").write_text(json.dumps(saved))
    pretrain.check_resumable(cfg, work)
    (work / "denoiser.pt").write_bytes(b"")
    with pytest.raises(MudiError, match="text_layers"):
        pretrain.check_resumable(dataclasses.replace(cfg, text_layers=2), work)
    (work / "denoiser.pt").unlink()
    folder = pretrain.run(dataclasses.replace(cfg, text_layers=2), tmp_path / "b")  # the denoiser is new: allowed
    assert pretrain.load_toyworld_pipeline(folder).text_encoder.config.num_hidden_layers == 2
