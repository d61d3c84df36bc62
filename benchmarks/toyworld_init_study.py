"""Why the mean-shifted init does not help in the toy world (issue 24, item 4; docs/toyworld.md).

Three measurements, all on mudi's own code paths (``backbone.encode_images``, ``first_step_signal_coefficient``,
``sampling.images.generate_images``), with the authors' defaults (nothing tuned):

1. **Latent statistics** of the toy VAE: per-channel mean/std of the *scaled* latents (what ``encode_images``
   returns and the UNet was trained on) over toy scenes on the plain white background, over single subjects
   (the shipped reference photos), and of ``E(x_init)`` inside and outside the init's mask; the latents of plain
   backgrounds; what the zero latent (the init's "no shift" outside the mask) decodes to.
2. **The first-step signal** ``c = sqrt(ᾱ_t0)`` of the toy scheduler (and the first timestep the pipeline really
   uses, recorded during sampling), the SNR of the mean shift ``γ·c·E(x_init)`` inside the mask per γ, and the
   same for SDXL's schedule (EulerDiscrete config, no weights: unit-variance latents assumed, the SD convention).
3. **x0-predictions along the trajectory** (the paper's Fig. 22(b)) of a Seg-Mix LoRA of the demo pair
   (descriptive classes, trained as ``benchmarks/toyworld_quality.py`` trains it), init on/off at the same
   seeds: per step, the correlation of the predicted x0 with ``E(x_init)`` inside the mask and with the final
   x0; whether the final image puts objects where the layout says, and whether they fuse; success by layout
   geometry (the two subjects' boxes ≥ 2 px apart, as every pretraining scene, or closer/overlapping).

    OMP_NUM_THREADS=1 python benchmarks/toyworld_init_study.py --out toyworld-init-study   # about 10 min
    python benchmarks/toyworld_init_study.py --quick --out /tmp/tis                      # plumbing, seconds

Resumable: the LoRA and each γ cell's measurements are kept under --out. One CPU thread (set below, on
purpose: the numbers are then deterministic given the seeds).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mudi.adapters import registry
from mudi.adapters.sd import SDXL_SCHEDULE, scheduler_first_step_signal
from mudi.core.init_latents import default_gamma, image_to_pixels, mask_to_latent_grid, masked_correlation
from mudi.core.segmix import SegMixParams
from mudi.data.subjects import load_subjects
from mudi.sampling.images import generate_images
from mudi.sampling.init import compose_init
from mudi.sampling.loras import apply_loras
from mudi.toyworld import MODEL_DIR
from mudi.toyworld.checker import as_rgb_uint8, background_colour, detect_objects
from mudi.toyworld.evaluate import judge_images, summarize_verdicts
from mudi.toyworld.world import DEMO_SUBJECTS, MIN_GAP, WHITE, render_scene, sample_dataset

STEPS = 30  # the toy benchmark's DDIM steps (docs/toyworld.md)
# The init's compositions: the authors' (mudi's default) and, as a diagnostic only (not a default), subjects kept
# apart and smaller, as in the third table of docs/results/toyworld-quality-2026-12-01.md
LAYOUTS = {"authors": SegMixParams(), "apart_small": SegMixParams(allow_overlap=False, scale_range=(0.5, 0.75))}
SHEET_STEPS = (0, 2, 5, 9, 14, 29)  # x0-prediction columns of the contact sheet
SHEET_SEEDS = 4


def encode(backbone, images) -> torch.Tensor:
    """Scaled latents ``(B, 4, 16, 16)`` of uint8 images, exactly as the init encodes x_init."""
    px = torch.cat([image_to_pixels(np.array(im, dtype=np.uint8)) for im in images])
    with torch.no_grad():
        return backbone.encode_images(px).float()


def channel_stats(z: torch.Tensor, sel: torch.Tensor | None = None) -> dict:
    """Per-channel mean/std and the overall std and RMS of latents ``(B, C, h, w)`` (cells where ``sel``)."""
    flat = z.permute(1, 0, 2, 3).reshape(z.shape[1], -1)
    if sel is not None:
        flat = flat[:, torch.broadcast_to(sel, (z.shape[0], 1, *z.shape[2:]))[:, 0].reshape(-1)]
    r = lambda t: [round(float(v), 3) for v in t]  # noqa: E731
    return {"mean": r(flat.mean(1)), "std": r(flat.std(1)), "global_std": round(float(flat.std()), 3),
            "rms": round(float(flat.pow(2).mean().sqrt()), 3), "cells": int(flat.shape[1])}


def latent_stats(backbone, subjects, n: int, seeds: list[int]) -> dict:
    """Measurement 1: what the toy VAE's scaled latents look like, and where x_init sits among them."""
    images, _, scenes = sample_dataset(n, seed=1)
    z = encode(backbone, images)
    white2 = [i for i, s in enumerate(scenes) if s.background == WHITE and len(s.objects) == 2]
    masks = torch.cat([mask_to_latent_grid(np.any(render_scene(scenes[i])[1], axis=0), (16, 16)) for i in white2])
    refs = [np.asarray(Image.open(p.path).convert("RGB")) for s in subjects for p in s.images]
    comps = [compose_init(subjects, s, (32, 32))[0] for s in seeds]
    zi = encode(backbone, [c.image for c in comps])
    m = mask_to_latent_grid(np.stack([c.union_mask for c in comps]), (16, 16))
    plain = {f"{c[0]},{c[1]},{c[2]}": encode(backbone, [np.full((32, 32, 3), c, np.uint8)]) for c in
             [(255, 255, 255), (232, 232, 232), (128, 128, 128)]}
    with torch.no_grad():
        zero_rgb = ((backbone.decode_latents(torch.zeros(1, 4, 16, 16)) + 1) * 127.5).mean((0, 2, 3))
    white = plain["255,255,255"].mean((0, 2, 3)).view(1, 4, 1, 1)
    return {
        "scaling_factor": float(backbone.pipeline.vae.config.scaling_factor),
        "dataset_all": channel_stats(z),
        "white_2obj_objects": channel_stats(z[white2], masks > 0.5),
        "white_2obj_background": channel_stats(z[white2], masks <= 0.5),
        "single_subject_refs": channel_stats(encode(backbone, refs)),
        "x_init_inside_mask": channel_stats(zi, m > 0.5),
        "x_init_outside_mask": channel_stats(zi, m <= 0.5),
        "x_init_masked_whole": channel_stats(zi * m),
        "x_init_inside_minus_white": channel_stats(zi - white, m > 0.5),
        "plain_backgrounds": {k: channel_stats(v) for k, v in plain.items()},
        "zero_latent_decodes_to_rgb": [round(float(v), 1) for v in zero_rgb],
        "mask_fraction": round(float(m.mean()), 3)}


def first_step(backbone, stats: dict, gammas: list[float]) -> dict:
    """Measurement 2: c = sqrt(ᾱ_t0) and the SNR of the mean shift per γ, toy vs SDXL (schedule only)."""
    from diffusers import EulerDiscreteScheduler

    sdxl = EulerDiscreteScheduler(**SDXL_SCHEDULE)
    toy = backbone.pipeline.scheduler
    c = {"toy_30": backbone.first_step_signal_coefficient(STEPS), "toy_50": backbone.first_step_signal_coefficient(50),
         "sdxl_50": scheduler_first_step_signal(sdxl, 50), "sdxl_30": scheduler_first_step_signal(sdxl, 30)}
    ms_in = stats["x_init_inside_mask"]["rms"] ** 2  # mean square of E(x_init) inside the mask
    frac = stats["mask_fraction"]
    rows = []
    for g in gammas:
        toy_cell = (g * c["toy_30"]) ** 2 * ms_in
        sdxl_cell = (g * c["sdxl_50"]) ** 2 * 1.0  # unit-variance latents: the SD/SDXL scaling_factor convention
        rows.append({"gamma": g, "toy_shift_rms": g * c["toy_30"] * ms_in ** 0.5, "toy_cell_snr": toy_cell,
                     "toy_region_snr": toy_cell * 4 * frac * 16 * 16, "sdxl_shift_rms": g * c["sdxl_50"],
                     "sdxl_cell_snr": sdxl_cell, "sdxl_region_snr": sdxl_cell * 4 * frac * 128 * 128})
    schedule = []
    for f in (0.0, 0.1, 0.2, 0.33, 0.5):
        schedule.append({"fraction": f, "toy_30": _signal_at(toy, STEPS, f), "sdxl_50": _signal_at(sdxl, 50, f)})
    return {"coefficients": c, "per_gamma": rows, "schedule": schedule}


def _signal_at(scheduler, steps: int, fraction: float) -> float:
    import copy

    s = copy.deepcopy(scheduler)
    s.set_timesteps(steps, device="cpu")
    t = int(round(float(s.timesteps[int(fraction * steps)])))
    return float(s.alphas_cumprod[t]) ** 0.5


class X0Recorder:
    """Wraps the pipeline scheduler's ``step`` to keep every ``pred_original_sample`` and timestep."""

    def __init__(self, scheduler):
        self.scheduler, self.orig = scheduler, scheduler.step
        self.x0: list[torch.Tensor] = []
        self.timesteps: list[int] = []

        @functools.wraps(self.orig)
        def step(model_output, timestep, sample, *a, **k):
            out = self.orig(model_output, timestep, sample, *a, **k)
            self.x0.append((out[1] if isinstance(out, tuple) else out.pred_original_sample).detach().float().clone())
            self.timesteps.append(int(timestep))
            return out
        scheduler.step = step

    def close(self):
        del self.scheduler.step  # back to the class's method


def layout_geometry(comp) -> dict:
    """Gap (px) between the two subjects' boxes (negative: overlap) and whether their latent masks touch."""
    (a0, a1, a2, a3), (b0, b1, b2, b3) = comp.boxes_xyxy[:2]
    gap = max(b0 - a2, a0 - b2, b1 - a3, a1 - b3)
    m = [mask_to_latent_grid(comp.masks[i], (16, 16)) for i in range(2)]
    touch = bool((torch.nn.functional.max_pool2d(m[0], 3, 1, 1) * m[1]).sum() > 0)
    return {"gap_px": float(gap), "apart": bool(gap >= MIN_GAP), "latent_touch": touch}


def placement(image, comp, cover: float = 0.3) -> dict:
    """Did the final image draw an object over each layout subject, and one object over both (fused)?"""
    objs = detect_objects(image)
    frac = [[float((o.mask & comp.masks[i]).sum()) / max(int(comp.masks[i].sum()), 1) for i in range(2)] for o in objs]
    placed = all(any(f[i] >= cover for f in frac) for i in range(2))
    fused = any(f[0] >= cover and f[1] >= cover for f in frac)
    bg = background_colour(as_rgb_uint8(image).astype(np.float32))
    return {"placed": placed, "fused": fused, "objects": len(objs), "white_bg": bool(bg.min() >= 245)}


def run_cell(args, backbone, subjects, prompt: str, gamma: float, seeds: list[int], layout: str = "authors") -> dict:
    """Measurement 3 for one γ and init layout: generate through mudi, record x0-predictions, measure."""
    rec = X0Recorder(backbone.pipeline.scheduler)
    try:
        results = generate_images(backbone, prompt, seeds, subjects=subjects if gamma > 0 else None, gamma=gamma,
                                  init="mean_shifted" if gamma > 0 else "none", negative_prompt=None,
                                  segmix_params=LAYOUTS[layout],
                                  num_inference_steps=args.steps_sampling, guidance_scale=args.guidance,
                                  height=32, width=32, batch_size=args.batch, progress=False)
    finally:
        rec.close()
    nb, steps = -(-len(seeds) // args.batch), args.steps_sampling
    x0 = torch.stack([torch.cat([rec.x0[b * steps + k] for b in range(nb)]) for k in range(steps)])  # (S, N, 4, h, w)
    comps = [r.composition or compose_init(subjects, s, (32, 32), params=LAYOUTS[layout])[0]
             for r, s in zip(results, seeds)]
    zi = encode(backbone, [c.image for c in comps])
    m = mask_to_latent_grid(np.stack([c.union_mask for c in comps]), (16, 16))
    corr_init = [[masked_correlation(x0[k, i:i + 1], zi[i:i + 1], m[i:i + 1]) for i in range(len(seeds))]
                 for k in range(steps)]
    full = torch.ones_like(m[:1])
    corr_final = [[masked_correlation(x0[k, i:i + 1], x0[-1, i:i + 1], full) for i in range(len(seeds))]
                  for k in range(steps)]
    images = [r.image for r in results]
    verdicts = judge_images(images, DEMO_SUBJECTS)
    per_image = [{"seed": s, "verdict": v, **layout_geometry(c), **placement(im, c)}
                 for s, v, c, im in zip(seeds, verdicts, comps, images)]
    with torch.no_grad():
        tiles = [backbone.decode_latents(x0[k, :SHEET_SEEDS]) for k in SHEET_STEPS if k < steps]
    sheet = [[((t[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8).tolist()
              for t in tiles] for i in range(min(SHEET_SEEDS, len(seeds)))]
    return {"gamma": gamma, "layout": layout, "timesteps": rec.timesteps[:steps], "summary": summarize_verdicts(verdicts),
            "corr_init_inside": [float(np.mean(r)) for r in corr_init],
            "corr_final": [float(np.mean(r)) for r in corr_final], "per_image": per_image,
            "x_init": [c.image.tolist() for c in comps[:SHEET_SEEDS]], "sheet": sheet,
            "final": [im.tolist() for im in images[:SHEET_SEEDS]]}


def measured_coefficient(backbone, subjects, steps: int) -> float:
    """c read back from mudi's own init: ``(z - eps) / (γ·E(x_init)⊙M)`` inside the mask, γ = 1."""
    from mudi.sampling.init import build_initial_latents

    comp = compose_init(subjects, 0, (32, 32))[0]
    z, info = build_initial_latents(backbone, [comp], [torch.Generator().manual_seed(0)], 1.0, steps)
    sel = torch.broadcast_to(info["latent_mask"] > 0.5, z.shape)
    return float(((z - info["noise"])[sel] / info["init_latents"][sel]).median())


def lora_folder(args, out: Path) -> Path | None:
    """The Seg-Mix LoRA of the demo pair (descriptive classes), trained as toyworld_quality.py does."""
    if args.quick:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    import toyworld_quality as tq

    ns = argparse.Namespace(model=args.model, steps=800, rank=8, lr=1e-3, batch_size=8, composition_prob=0.3)
    return tq.train_lora(ns, out, tq.subject_folders(out, "descriptive"), "descriptive", "segmix", args.lora_seed)


def aggregate(cell: dict) -> dict:
    """Success, missing, placement and fusion overall and split by the layout's geometry."""
    rows = cell["per_image"]

    def rate(sel, key):
        sub = [r for r in rows if sel(r)]
        return {"n": len(sub), "rate": round(sum(bool(key(r)) for r in sub) / len(sub), 3) if sub else None}
    out = {}
    for name, sel in [("all", lambda r: True), ("apart", lambda r: r["apart"]), ("close", lambda r: not r["apart"])]:
        out[name] = {"success": rate(sel, lambda r: r["verdict"] == "correct"),
                     "missing": rate(sel, lambda r: r["verdict"] == "missing"),
                     "placed": rate(sel, lambda r: r["placed"]), "fused": rate(sel, lambda r: r["fused"]),
                     "duplicate": rate(sel, lambda r: r["verdict"] == "duplicate"),
                     "white_bg": rate(sel, lambda r: r.get("white_bg"))}
    return out


def contact_sheet(cells: list[dict], path: Path, scale: int = 2) -> None:
    """Rows: per seed, per γ: x_init | x0-pred at SHEET_STEPS | final image (one 32-px tile each, white gaps)."""
    rows = []
    for i in range(len(cells[0]["sheet"])):
        for cell in cells:
            tiles = [np.asarray(cell["x_init"][i], np.uint8), *[np.asarray(t, np.uint8) for t in cell["sheet"][i]],
                     np.asarray(cell["final"][i], np.uint8)]
            row = np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in tiles], 1)
            rows.append(row)
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    sheet = np.concatenate(rows, 0)
    big = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)
    big.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def markdown(res: dict) -> str:
    st, fs = res["latent_stats"], res["first_step"]
    L = ["## 1. Latent statistics (scaled latents, as `encode_images` returns them)", "",
         f"scaling_factor {st['scaling_factor']:.4f}; zero latent decodes to RGB {st['zero_latent_decodes_to_rgb']}; "
         f"init mask covers {st['mask_fraction']:.3f} of the latent grid.", "",
         "| latents | per-channel mean | per-channel std | global std | RMS | cells |", "|---|---|---|---|---|---|"]
    for k, v in [*((k, v) for k, v in st.items() if isinstance(v, dict) and "mean" in v),
                 *((f"plain {k}", v) for k, v in st["plain_backgrounds"].items())]:
        L.append(f"| {k} | {v['mean']} | {v['std']} | {v['global_std']} | {v['rms']} | {v['cells']} |")
    c = fs["coefficients"]
    L += ["", "## 2. First-step signal", "",
          f"c = sqrt(ᾱ_t0): toy {c['toy_30']:.4f} at 30 steps ({c['toy_50']:.4f} at 50); SDXL {c['sdxl_50']:.4f} at 50 "
          f"({c['sdxl_30']:.4f} at 30). Read back from mudi's init: {res['c_measured']:.4f}; the pipeline's first "
          f"timestep {res['t0_pipeline']} → {res['c_pipeline']:.4f}.", "",
          "| γ | toy shift RMS in mask | toy SNR/cell | toy SNR over the mask | SDXL shift RMS | SDXL SNR/cell | "
          "SDXL SNR over the mask (128², same fraction) |", "|---|---|---|---|---|---|---|"]
    for r in fs["per_gamma"]:
        L.append(f"| {r['gamma']:g} | {r['toy_shift_rms']:.3f} | {r['toy_cell_snr']:.4f} | {r['toy_region_snr']:.1f} | "
                 f"{r['sdxl_shift_rms']:.3f} | {r['sdxl_cell_snr']:.4f} | {r['sdxl_region_snr']:.0f} |")
    L += ["", "sqrt(ᾱ) along the trajectory (fraction of the steps done): " +
          ", ".join(f"{s['fraction']:.2f}: toy {s['toy_30']:.3f} / SDXL {s['sdxl_50']:.3f}" for s in fs["schedule"]),
          "", "## 3. x0-predictions (Seg-Mix LoRA, descriptive classes)", ""]
    cells = res["cells"]
    lab = {id(c): f"γ {c['gamma']:g}" + ("" if c["layout"] == "authors" else f" ({c['layout']})") for c in cells}
    L += ["corr(x0-prediction, E(x_init)) inside the mask / corr(x0-prediction, final x0) over the image, mean of "
          "the images:", "", "| step | " + " | ".join(lab[id(c)] for c in cells)
          + " |", "|---|" + "---|" * len(cells)]
    for k in sorted({0, 1, 2, 3, 5, 9, 14, 19, len(cells[0]["corr_final"]) - 1}):
        if k < len(cells[0]["corr_final"]):
            L.append(f"| {k} | " + " | ".join(f"{c['corr_init_inside'][k]:+.3f} / {c['corr_final'][k]:.3f}"
                                               for c in cells) + " |")
    L += ["", "| cell | layouts | n | success | missing | objects where the layout's subjects are | one object over "
          "both | duplicate | white background | vs γ 0, same seeds: won / lost (to missing) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        pr = c.get("paired", {})
        for name, a in c["aggregate"].items():
            paired = f"{pr['won']} / {pr['lost']} ({pr['lost_to_missing']})" if pr and name == "all" else ""
            L.append(f"| {lab[id(c)]} | {name} | {a['success']['n']} | {a['success']['rate']} | {a['missing']['rate']} "
                     f"| {a['placed']['rate']} | {a['fused']['rate']} | {a['duplicate']['rate']} | {a['white_bg']['rate']} "
                     f"| {paired} |")
    L += ["", "Verdicts: " + "; ".join(f"{lab[id(c)]}: {c['summary']['verdicts']}" for c in cells)]
    return "\n".join(L) + "\n"


def run_cells(args, backbone, subjects, prompt: str, seeds: list[int]) -> list[dict]:
    """Every (γ, layout) cell, each kept under <out>/cells/ (a rerun reuses it), with its paired comparison
    against γ 0 at the same seeds (same noise): images won (γ 0 not correct, this cell correct) and lost."""
    todo = [(g, "authors") for g in args.gammas] + [(g, "apart_small") for g in args.layout_gammas]
    cells = []
    for g, layout in todo:
        suffix = "" if layout == "authors" else f"-{layout}"
        path = args.out / "cells" / f"g{g:g}{suffix}-n{args.images}-k{args.steps_sampling}.json"
        if path.is_file() and not args.quick:
            cell = json.loads(path.read_text())
            cell.setdefault("layout", layout)
        else:
            cell = run_cell(args, backbone, subjects, prompt, g, seeds, layout)
            cell["aggregate"] = aggregate(cell)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cell))
        cells.append(cell)
        print(f"  γ {g:g} {layout}: success {cell['aggregate']['all']['success']['rate']}", flush=True)
    base = next((c for c in cells if c["gamma"] == 0), None)
    for c in cells:
        if base is not None:
            pairs = list(zip(base["per_image"], c["per_image"]))
            c["paired"] = {"won": sum(b["verdict"] != "correct" and x["verdict"] == "correct" for b, x in pairs),
                           "lost": sum(b["verdict"] == "correct" and x["verdict"] != "correct" for b, x in pairs),
                           "lost_to_missing": sum(b["verdict"] == "correct" and x["verdict"] == "missing"
                                                  for b, x in pairs)}
    return cells


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=MODEL_DIR)
    p.add_argument("--out", type=Path, default=Path("toyworld-init-study"))
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 3.0])
    p.add_argument("--layout_gammas", type=float, nargs="+", default=[1.0, 2.0],
                   help="γ of the diagnostic cells whose init keeps the subjects apart and smaller")
    p.add_argument("--sheet_gammas", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    p.add_argument("--lora_seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG (default <out>/x0-sheet.png)")
    p.add_argument("--quick", action="store_true", help="no LoRA (the base model asked in words), 4 images, 6 steps")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # deliberate: one thread, deterministic numbers, and the machine is shared
    torch.manual_seed(0)
    args.steps_sampling = 6 if args.quick else STEPS
    if args.quick:
        args.images, args.batch, args.gammas, args.layout_gammas = 4, 4, [0.0, default_gamma(2)], [default_gamma(2)]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lora = lora_folder(args, args.out)
    backbone = registry.load_backbone("sd15", str(args.model), "cpu", torch.float32)
    backbone.pipeline.set_progress_bar_config(disable=True)
    from mudi.toyworld import SUBJECTS_DIR

    folders = [str(args.out / "subjects" / "descriptive" / s.name) if lora else str(SUBJECTS_DIR / s.name)
               for s in DEMO_SUBJECTS]
    subjects = load_subjects(folders)
    prompt = (f"a photo of a {subjects[0].phrase} and a {subjects[1].phrase}." if lora else
              "a photo of a red yellow square and a blue yellow square.")
    seeds = list(range(args.images))
    res = {"prompt": prompt, "lora": str(lora), "default_gamma": default_gamma(2),
           "latent_stats": latent_stats(backbone, subjects, 32 if args.quick else 512, seeds[:64])}
    res["first_step"] = first_step(backbone, res["latent_stats"], [0.0, 1.0, 2.0, 3.0, 4.0])
    res["c_measured"] = measured_coefficient(backbone, subjects, args.steps_sampling)
    names = apply_loras(backbone, [str(lora)]) if lora else []
    cells = run_cells(args, backbone, subjects, prompt, seeds)
    if names:
        backbone.pipeline.delete_adapters(names)
    res["t0_pipeline"] = cells[0]["timesteps"][0]
    res["c_pipeline"] = float(backbone.pipeline.scheduler.alphas_cumprod[res["t0_pipeline"]]) ** 0.5
    res["cells"] = cells
    contact_sheet([c for c in cells if c["layout"] == "authors" and c["gamma"] in args.sheet_gammas],
                  args.sheet or args.out / "x0-sheet.png")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    md = markdown(res)
    slim = {k: v for k, v in res.items() if k != "cells"}
    slim["cells"] = [{k: v for k, v in c.items() if k not in ("sheet", "x_init", "final", "per_image")} for c in cells]
    (args.out / "results.json").write_text(json.dumps(slim, indent=1))
    (args.out / "results.md").write_text(md)
    print(md + f"\n{res['seconds']:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
