"""The defaults that follow the authors' recipe (issue 23), each pinned so that a drift fails here: the init's γ
per number of subjects, the sampler steps per family, FLUX without the init, `mudi prior` as generate_prior.py
(prompt, negative prompt, OWLv2 at 0.4, up to 10 tries until one box, the caption), D&C scoring in float32, and
prior compositions with the instance subject's class on the left."""

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mudi.adapters import registry
from mudi.adapters.base import Detection
from mudi.cli import main as cli_main
from mudi.core.init_latents import appendix_b9_gamma, default_gamma
from mudi.core.prompts import PRIOR_NEGATIVE_PROMPT, prior_caption, prior_prompt
from mudi.data.subjects import find_subjects, load_subjects
from mudi.sampling.config import GenerateConfig
from mudi.sampling.init import resolve_init
from mudi.segmentation.prior import PriorConfig, make_prior_set

SAMPLES = Path(str(files("mudi") / "samples"))
AUTHORS_PRIOR_PROMPT = ("a photo of a {}, simple background, full body view, award winning photography, "
                        "highly detailed")
AUTHORS_NEGATIVE = "anime, cartoon, graphic, text, painting, crayon, graphite, abstract glitch, blurry"


# ------------------------------------------------------------------------------------------------ γ and steps
def test_gamma_default_is_1_for_two_subjects_and_appendix_b9s_beyond():
    assert [default_gamma(n) for n in (1, 2, 3, 4, 5)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert [appendix_b9_gamma(n) for n in (2, 3, 4)] == [2.0, 2.0, 3.0]  # the N-subject study keeps its own


def test_generate_uses_gamma_1_for_two_subjects(tmp_path):
    out = tmp_path / "g"
    assert cli_main(["generate", "--backbone", "tiny-sd", "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
                     "--num_images", "1", "--steps", "2", "--out", str(out)]) == 0
    meta = json.loads(next(out.glob("0000_*.json")).read_text())
    assert meta["init"] == "mean_shifted" and meta["gamma"] == 1.0


def test_default_steps_are_the_pipelines_the_authors_called():
    # StableDiffusion(XL)Pipeline's 50 (their utils/pipe.py passes none); FluxPipeline's 28
    steps = {name: registry.backbone_default(name, "default_num_inference_steps")
             for name in ("sd15", "sd2", "sdxl", "flux", "tiny-sdxl", "tiny-flux")}
    assert steps == {"sd15": 50, "sd2": 50, "sdxl": 50, "flux": 28, "tiny-sdxl": 50, "tiny-flux": 28}
    assert GenerateConfig().num_inference_steps is None and PriorConfig(output_dir="x").num_inference_steps is None
    from mudi.benchmark.config import BenchmarkConfig

    assert BenchmarkConfig().sampler_steps() == 50 and BenchmarkConfig(backbone="flux").sampler_steps() == 28


# ------------------------------------------------------------------------------------------------ FLUX init
def test_flux_generates_without_the_init_by_default():
    from mudi.iterative.config import IterateConfig

    assert GenerateConfig().init == "auto" and IterateConfig().init == "auto"
    assert {n: resolve_init("auto", backbone_name=n) for n in ("sdxl", "sd15", "flux", "tiny-sd", "tiny-flux")} == \
        {"sdxl": "mean_shifted", "sd15": "mean_shifted", "flux": "none", "tiny-sd": "mean_shifted",
         "tiny-flux": "none"}
    assert resolve_init("mean_shifted", backbone_name="flux") == "mean_shifted"  # opt-in stays
    from mudi.core.methods import METHODS

    # `mudi run` / `mudi benchmark`'s MuDI is the authors' per family: the init on SD/SDXL, none on FLUX
    assert METHODS["mudi"].init == "auto" and METHODS["mudi-no-init"].init == "none"


def test_flux_cli_init_off_by_default_and_opt_in(tmp_path):
    subjects = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
    for flags, init in (([], "none"), (["--init", "mean_shifted"], "mean_shifted")):
        out = tmp_path / init
        assert cli_main(["generate", "--backbone", "tiny-flux", "--subjects", *subjects, "--num_images", "1",
                         "--steps", "2", "--out", str(out), *flags]) == 0
        meta = json.loads(next(out.glob("0000_*.json")).read_text())
        assert meta["init"] == init and meta["gamma"] == (1.0 if init == "mean_shifted" else 0.0)
        assert (out / "init").is_dir() == (init == "mean_shifted")
        assert "init: " + init in (out / "generate_config.yaml").read_text()  # the resolved value is written


# ------------------------------------------------------------------------------------------------ mudi prior
class ImageDetector:
    """A scripted detector whose count depends only on the image (so only on its seed and try): one box when
    the image's coarse mean brightness is ≡ 0 mod ``every``, else two (coarse, so that the ~1e-6 float
    differences of another batch size cannot change it). Records queries and thresholds."""

    def __init__(self, every=3):
        self.every, self.queries, self.thresholds, self.calls = every, [], [], 0

    def detect(self, images, queries, threshold):
        self.thresholds.append(threshold)
        out = []
        for im, q in zip(images, queries):
            self.calls += 1
            self.queries.append(list(q))
            k = 1 if int(np.asarray(im, dtype=np.float64).mean() // 2) % self.every == 0 else 2
            out.append([Detection((2.0 * j, 2.0, 2.0 * j + 30, 40.0), 0.9, 0, q[0]) for j in range(k)])
        return out


class NeverOne(ImageDetector):
    def detect(self, images, queries, threshold):
        self.calls += len(images)
        return [[Detection((0, 0, 9, 9), 0.9, 0, q[0])] * 2 for q in queries]


class BoxSegmenter:
    def segment(self, images, boxes):
        out = []
        for im in images:
            m = np.zeros(im.shape[:2], bool)
            m[10:40, 10:40] = True
            m[50:55, 50:55] = True  # a second component: the authors keep SAM's mask as it is
            out.append(m)
        return out


class SpyPipeline:
    """Records every call's keywords, then runs the real pipeline."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, **kw):
        self.calls.append(kw)
        return self.pipe(**kw)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


@pytest.fixture()
def tiny_sd():
    bb = registry.load_backbone("tiny-sd")
    bb.pipeline = SpyPipeline(bb.pipeline)
    return bb


def test_prior_defaults_are_generate_prior_py():
    cfg = PriorConfig(output_dir="x")
    assert (cfg.prompt, cfg.negative_prompt, cfg.caption) == (AUTHORS_PRIOR_PROMPT, AUTHORS_NEGATIVE, "A photo of a {}")
    assert (cfg.threshold, cfg.max_tries, cfg.num_images, cfg.nms_iou) == (0.4, 10, 50, None)
    assert not (cfg.use_class_noun_query or cfg.use_single_component or cfg.use_fill_holes)
    assert cfg.min_mask_fraction == 0.0
    assert prior_prompt("harry potter toy") == AUTHORS_PRIOR_PROMPT.format("harry potter toy")
    assert PRIOR_NEGATIVE_PROMPT == AUTHORS_NEGATIVE and prior_caption("corgi") == "A photo of a corgi"


def test_prior_retries_until_one_box_with_the_authors_prompt(tmp_path, tiny_sd):
    out = tmp_path / "p"
    cfg = PriorConfig(output_dir=str(out), classes=["harry potter toy"], num_images=4, backbone="tiny-sd",
                      num_inference_steps=2, generation_batch_size=4)
    det = ImageDetector()
    summary = make_prior_set(cfg, det, BoxSegmenter(), tiny_sd)
    call = tiny_sd.pipeline.calls[0]
    assert call["prompt"][0] == AUTHORS_PRIOR_PROMPT.format("harry potter toy")
    assert call["negative_prompt"][0] == AUTHORS_NEGATIVE and call["num_inference_steps"] == 2
    assert set(det.thresholds) == {0.4} and all(q == ["harry potter toy"] for q in det.queries)  # one query
    records = json.loads((out / "prior_progress.json").read_text())["classes"]["harry potter toy"]["images"]
    tries = [records[str(i)]["tries"] for i in range(4)]
    assert det.calls == sum(tries) > 4  # some images were drawn again
    assert all(r["status"] == "kept" for r in records.values()) and summary["harry potter toy"]["kept"] == 4
    (prior,) = find_subjects(out)
    assert {im.caption for im in prior.images} == {"A photo of a harry potter toy"}
    _, mask = prior.load(0)
    assert mask[52, 52]  # SAM's mask as it is: no component filter


def test_prior_gives_up_after_max_tries(tmp_path, tiny_sd):
    out = tmp_path / "p"
    cfg = PriorConfig(output_dir=str(out), classes=["dog"], num_images=2, backbone="tiny-sd", num_inference_steps=2,
                      max_tries=3)
    det = NeverOne()
    summary = make_prior_set(cfg, det, BoxSegmenter(), tiny_sd)
    assert det.calls == 6 and summary["dog"] == {"letter": "a", "kept": 0, "rejected": 2}
    rec = json.loads((out / "prior_progress.json").read_text())["classes"]["dog"]["images"]["0"]
    assert rec["reason"] == "3 tries, the last: 2 detections" and not list(out.glob("a0*.png"))


def test_prior_retries_do_not_depend_on_the_batch(tmp_path, tiny_sd):
    images = []
    for bs in (1, 3):
        out = tmp_path / f"b{bs}"
        cfg = PriorConfig(output_dir=str(out), classes=["dog"], num_images=3, backbone="tiny-sd",
                          num_inference_steps=2, generation_batch_size=bs)
        make_prior_set(cfg, ImageDetector(every=2), BoxSegmenter(), tiny_sd)
        recs = json.loads((out / "prior_progress.json").read_text())["classes"]["dog"]["images"]
        tries = [recs[str(i)]["tries"] for i in range(3)]
        kept = [np.asarray(Image.open(out / f"a0{i}.png"), dtype=np.int16) for i in range(3)
                if recs[str(i)]["status"] == "kept"]
        images.append((tries, kept))
    assert images[0][0] == images[1][0] and max(images[0][0]) > 1 and images[0][1]  # the same tries, some retried
    for a, b in zip(images[0][1], images[1][1]):
        assert np.abs(a - b).max() <= 1  # the same images (another batch size moves floats by ~1e-6)


def test_flux_prior_has_no_negative_prompt(tmp_path):
    bb = registry.load_backbone("tiny-flux")
    bb.pipeline = SpyPipeline(bb.pipeline)
    cfg = PriorConfig(output_dir=str(tmp_path / "p"), classes=["dog"], num_images=1, backbone="tiny-flux",
                      num_inference_steps=2)
    make_prior_set(cfg, ImageDetector(every=1), BoxSegmenter(), bb)
    assert "negative_prompt" not in bb.pipeline.calls[0]


# ------------------------------------------------------------------------------------------------ D&C dtype
def test_scoring_is_float32_whatever_the_generation_dtype():
    from mudi.benchmark.config import BenchmarkConfig
    from mudi.iterative.config import IterateConfig
    from mudi.pipeline.config import RunConfig
    from mudi.scoring.config import EvaluateConfig

    assert EvaluateConfig().dtype == "float32"
    assert BenchmarkConfig(dtype="bfloat16").evaluate_config("i", [], "o").dtype == "float32"
    assert IterateConfig(dtype="float16").evaluate_config().dtype == "float32"
    assert RunConfig(dtype="bfloat16").stage_config("evaluate", check=True).dtype == "float32"
    # a faster dtype stays an option
    assert BenchmarkConfig(evaluate={"dtype": "bfloat16"}).evaluate_config("i", [], "o").dtype == "bfloat16"


# ------------------------------------------------------------------------------------------------ priors, left
def test_prior_compositions_put_the_instance_class_on_the_left():
    from mudi.core.segmix import SEGMIX_PRESETS
    from mudi.training.data import SampleSource

    subjects = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    rng = np.random.default_rng(0)
    priors = SampleSource(subjects, 64, segmix=SEGMIX_PRESETS["sdxl"], is_prior=True)
    for si in (0, 1) * 10:
        (a0, ay, a1, _), (b0, by, b1, _) = priors.compose(rng, si, 1 - si).boxes_xyxy  # caption order: own first
        assert a0 + a1 <= b0 + b1 and ay == by  # own class's centre left of the other's, tops aligned
