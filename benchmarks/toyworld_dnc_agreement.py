"""Does Detect-and-Compare track identity mixing? Checked against the toy world's ground truth (issue 24, item 6).

For every shipped toy subject set (src/mudi/toyworld/sets.py) this renders images whose content is known by
construction, scores each with the real D&C code path (``scoring.evaluator.DncEvaluator`` with the registered
``toyworld`` detector and embedder, D&C's defaults: spectral norm, greedy matching, threshold 0.4, whole
reference photos) and judges each with the checker:

- ``correct``: every subject once; ``missing``: one left out; ``duplicate``: one drawn in place of another;
- ``hybrid``: one subject takes one attribute (top colour, bottom colour or shape) of another, making an
  identity that is neither (only where the subjects differ in two or more attributes);
- ``swap``: two subjects exchange one attribute (only where that does not give the same set back);
- ``blend``: one subject drawn as the 50/50 pixel blend of itself and another at the same place ("blended
  colours"; a ghost of both outlines where the shapes differ);
- ``model`` (pairs only, ``--model_images``): the shipped toy model (no LoRA) asked for the pair in the world's
  words ("a photo of a red yellow square and a blue yellow square."), CFG 4, 30 DDIM steps.

It reports, per set, the ROC AUC of the D&C score between correct and identity-mixing images (computed here,
Mann-Whitney with ties counted half) — once with the labels of construction (``correct`` vs ``duplicate``,
``hybrid``, ``swap``, ``blend``) and once with the checker's verdicts over every image (``correct`` vs
``duplicate``, ``blend``, ``wrong_colour``, ``wrong_shape``) —, the mean D&C score per kind, and where D&C's own
flags (``count``, ``duplicate``, ``mixed``: none = D&C says fine) disagree with the checker.

    python benchmarks/toyworld_dnc_agreement.py [--per_kind 40] [--model_images 64] [--json out.json]

One CPU thread, about 2 minutes. Results: docs/results/toyworld-dnc-agreement-2026-12-06.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch

from mudi.adapters import registry
from mudi.data.subjects import load_subjects
from mudi.scoring.evaluator import DncEvaluator
from mudi.toyworld import SUBJECTS_DIR
from mudi.toyworld.checker import check_image
from mudi.toyworld.evaluate import toy_subjects
from mudi.toyworld.sets import PAIRS, SUBJECT_SETS, subject_folders
from mudi.toyworld.world import (
    Scene,
    ToySubject,
    caption_objects,
    place_objects,
    render_scene,
    sample_background,
)

MIXING_KINDS = ("duplicate", "hybrid", "swap", "blend")
MIXING_VERDICTS = ("duplicate", "blend", "wrong_colour", "wrong_shape")
ATTRIBUTES = ("shape", "top", "bottom")


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive scores above a negative), ties counted half (the ROC AUC); NaN when a side is empty."""
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def identity(s: ToySubject) -> tuple:
    return (s.shape, s.top, s.bottom)


def with_attribute(s: ToySubject, attribute: str, value) -> ToySubject | None:
    new = dict(zip(ATTRIBUTES, identity(s)), **{attribute: value})
    return None if new["top"] == new["bottom"] else ToySubject(s.name, s.identifier, **new)


def layout(rng: np.random.Generator, subjects: list[ToySubject]) -> tuple:
    """Object specs: placed at random the world's way (1-2 objects), or in the cells of a 2×2 grid (3-4)."""
    if len(subjects) <= 2:
        return place_objects(rng, [identity(s) for s in subjects])  # the world's sizes, 9-16 px
    cells = rng.permutation([(8, 8), (24, 8), (8, 24), (24, 24)])
    return tuple(s.spec(float(rng.integers(10, 13)), cx + rng.integers(-1, 2) / 2, cy + rng.integers(-1, 2) / 2)
                 for s, (cx, cy) in zip(subjects, cells))


def mixed_identities(rng: np.random.Generator, subjects: list[ToySubject], kind: str) -> list[ToySubject] | None:
    """The objects of one constructed image of ``kind`` (None where the kind does not exist for this set)."""
    i, j = rng.choice(len(subjects), 2, replace=False)
    out = list(subjects)
    if kind == "missing":
        return out[:i] + out[i + 1:]
    if kind == "duplicate":
        out[j] = subjects[i]
        return out
    known = {identity(s) for s in subjects}
    options = []
    for i, j, a in ((i, j, a) for i in range(len(subjects)) for j in range(len(subjects)) if i != j
                    for a in ATTRIBUTES):
        if kind == "hybrid":
            h = with_attribute(subjects[i], a, getattr(subjects[j], a))
            if h is not None and identity(h) not in known:
                options.append({i: h})
        elif kind == "swap":
            hi, hj = with_attribute(subjects[i], a, getattr(subjects[j], a)), with_attribute(subjects[j], a,
                                                                                              getattr(subjects[i], a))
            if i < j and hi is not None and hj is not None and {identity(hi), identity(hj)} != {
                    identity(subjects[i]), identity(subjects[j])}:
                options.append({i: hi, j: hj})
    if not options:
        return None
    for k, s in options[rng.integers(len(options))].items():
        out[k] = s
    return out


def render(rng: np.random.Generator, subjects: list[ToySubject], kind: str) -> tuple[np.ndarray, str] | None:
    """One constructed image of ``kind`` and what it shows, or None."""
    bg = sample_background(rng)
    if kind == "blend":
        i, j = rng.choice(len(subjects), 2, replace=False)
        specs = layout(rng, subjects)
        other = list(specs)
        other[i] = subjects[j].spec(specs[i].size, specs[i].cx, specs[i].cy)
        a = render_scene(Scene(specs, bg))[0].astype(np.float32)
        b = render_scene(Scene(tuple(other), bg))[0].astype(np.float32)
        return np.rint((a + b) / 2).astype(np.uint8), f"{subjects[i].name}~{subjects[j].name}"
    objects = subjects if kind == "correct" else mixed_identities(rng, subjects, kind)
    if objects is None:
        return None
    return render_scene(Scene(layout(rng, objects), bg))[0], " + ".join(s.phrase for s in objects)


def model_images(pipe, subjects: list[ToySubject], num_images: int, seed: int) -> list[np.ndarray]:
    """The shipped toy model's images of the pair named in the world's words (both orders, alternately)."""
    images = []
    for start in range(0, num_images, 32):
        n = min(32, num_images - start)
        prompts = [caption_objects(subjects if (start + k) % 2 == 0 else subjects[::-1]) for k in range(n)]
        gens = [torch.Generator().manual_seed(seed * 100003 + start + k) for k in range(n)]
        out = pipe(prompts, height=32, width=32, num_inference_steps=30, guidance_scale=4.0, generator=gens,
                   output_type="np")
        images += list(np.clip(np.rint(out.images * 255), 0, 255).astype(np.uint8))
    return images


def score_set(set_name: str, per_kind: int, seed: int, pipe, num_model: int) -> list[dict]:
    folders = subject_folders(SUBJECTS_DIR, set_name)
    subjects = toy_subjects(folders)
    evaluator = DncEvaluator(load_subjects(folders), registry.load("detector", "toyworld"),
                             {"dnc_toyworld": registry.load("embedder", "toyworld")})
    rng = np.random.default_rng([seed, list(SUBJECT_SETS).index(set_name)])
    rows, images = [], []
    for kind in ("correct", "missing", *MIXING_KINDS):
        for _ in range(per_kind):
            made = render(rng, subjects, kind)
            if made is None:
                break
            images.append(made[0])
            rows.append({"kind": kind, "shows": made[1]})
    if pipe is not None and set_name in PAIRS and num_model:
        for im in model_images(pipe, subjects, num_model, seed):
            images.append(im)
            rows.append({"kind": "model", "shows": "the toy model's image"})
    specs = [s.spec() for s in subjects]
    for row, im, res in zip(rows, images, evaluator.score_images(images)):
        d = res.dnc["dnc_toyworld"]
        row.update(set=set_name, dnc=float(d["score"]), dnc_flags=list(d["failures"]),
                   verdict=check_image(im, specs).verdict)
    return rows


def summarize(set_name: str, rows: list[dict]) -> dict:
    by_kind: dict[str, list[float]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r["dnc"])
    constructed = [r for r in rows if r["kind"] != "model"]
    auc_built = auc([r["dnc"] for r in constructed if r["kind"] == "correct"],
                    [r["dnc"] for r in constructed if r["kind"] in MIXING_KINDS])
    auc_checker = auc([r["dnc"] for r in rows if r["verdict"] == "correct"],
                      [r["dnc"] for r in rows if r["verdict"] in MIXING_VERDICTS])
    model = [r for r in rows if r["kind"] == "model"]
    auc_model = auc([r["dnc"] for r in model if r["verdict"] == "correct"],
                    [r["dnc"] for r in model if r["verdict"] in MIXING_VERDICTS])
    confusion = Counter((r["verdict"], "+".join(r["dnc_flags"]) or "none") for r in rows)
    return {"set": set_name, "n": len(rows), "auc_construction": auc_built, "auc_checker": auc_checker,
            "auc_model_images": auc_model, "mean_dnc": {k: float(np.mean(v)) for k, v in by_kind.items()},
            "kinds": {k: len(v) for k, v in by_kind.items()},
            "verdicts_by_kind": {k: dict(Counter(r["verdict"] for r in rows if r["kind"] == k)) for k in by_kind},
            "confusion": {f"{v} / {f}": n for (v, f), n in sorted(confusion.items())}}


def print_report(summaries: list[dict], rows: list[dict]) -> None:
    print("\n| set | AUC (construction) | AUC (checker's verdicts) | AUC (model images only) | n |")
    print("|---|---|---|---|---|")
    for s in summaries:
        print(f"| {s['set']} | {s['auc_construction']:.3f} | {s['auc_checker']:.3f} | {s['auc_model_images']:.3f} "
              f"| {s['n']} |")
    kinds = ("correct", "missing", *MIXING_KINDS, "model")
    print("\nmean D&C score per kind (count of images):\n")
    print("| set | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for s in summaries:
        cells = [f"{s['mean_dnc'][k]:.3f} ({s['kinds'][k]})" if k in s["kinds"] else "—" for k in kinds]
        print(f"| {s['set']} | " + " | ".join(cells) + " |")
    print("\nchecker's verdicts per constructed kind:")
    for s in summaries:
        print(f"  {s['set']}: " + "; ".join(f"{k}: {dict(v)}" for k, v in s["verdicts_by_kind"].items()))
    print("\nchecker's verdict / D&C's flags (none = D&C flags nothing), all sets:")
    total = Counter()
    for s in summaries:
        total.update(s["confusion"])
    for key, n in sorted(total.items()):
        print(f"  {key}: {n}")
    correct = [r["dnc"] for r in rows if r["verdict"] == "correct"]
    low = float(np.percentile(correct, 5)) if correct else float("nan")
    above = [r for r in rows if r["verdict"] in MIXING_VERDICTS and r["dnc"] >= low]
    print(f"\nidentity-mixing images (checker) scoring at or above the 5th percentile of correct ones ({low:.3f}): "
          f"{len(above)} of {sum(r['verdict'] in MIXING_VERDICTS for r in rows)}")
    for r in sorted(above, key=lambda r: -r["dnc"])[:12]:
        print(f"  {r['set']:13s} {r['kind']:9s} {r['verdict']:12s} D&C {r['dnc']:.3f} flags {r['dnc_flags']} "
              f"shows {r['shows']}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per_kind", type=int, default=40, help="constructed images per kind and set")
    ap.add_argument("--model_images", type=int, default=64, help="toy-model images per pair (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write every image's row and the summaries here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pipe = None
    if args.model_images:
        from mudi.toyworld.pretrain import load_toyworld_pipeline

        pipe = load_toyworld_pipeline()
        pipe.set_progress_bar_config(disable=True)
    rows, summaries = [], []
    for set_name in SUBJECT_SETS:
        set_rows = score_set(set_name, args.per_kind, args.seed, pipe, args.model_images)
        rows += set_rows
        summaries.append(summarize(set_name, set_rows))
        print(f"{set_name}: {len(set_rows)} images scored ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_report(summaries, rows)
    print(f"\n{len(rows)} images, {time.perf_counter() - t0:.0f} s on one thread")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summaries": summaries, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
