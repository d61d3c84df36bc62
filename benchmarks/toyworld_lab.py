"""The toy lab (issue 24, item 3): every method mudi knows and the paper's ablations on the shipped toy model and
every shipped toy subject set, judged by the toy checker, per pair and pooled, with Wilson 95 % intervals and the
failure kinds (docs/toyworld.md, "The lab").

The cells, their order and their cost are :mod:`toyworld_lab_plan` (``--plan`` prints them). Each LoRA is trained
by mudi's trainer (``mudi.training.loop.train``, the method's own recipe from ``METHODS[m].train``) and each cell's
images are drawn by mudi's generate path (``generate_images`` inside ``loras_applied``, which also loads Textual
Inversion and Custom Diffusion token files; region control for ``db-region``), image seeds ``0..N-1``, and judged
by :func:`mudi.toyworld.evaluate.judge_images`.

    OMP_NUM_THREADS=1 python benchmarks/toyworld_lab.py --plan                 # the plan, its CPU hours, what --out holds
    OMP_NUM_THREADS=1 python benchmarks/toyworld_lab.py --out toyworld-lab     # everything (~9 h), resumable
    OMP_NUM_THREADS=1 python benchmarks/toyworld_lab.py --out toyworld-lab --hours 2   # stop starting cells after 2 h
    python benchmarks/toyworld_lab.py --out toyworld-lab --report docs/results/toyworld-lab.md   # tables so far
    python benchmarks/toyworld_lab.py --quick --out /tmp/lab    # CI: 2 cells, 4 images, 10 steps (seconds)

Resumable: every training and every cell is a :class:`mudi.data.units.Unit` (its marker holds the fingerprint of
its settings); a rerun skips the finished ones and redoes one whose settings changed. Layout of ``--out``::

    lora/<training>/ + lora/<training>.json      LoRA (or token files) and its marker
    cells/<cell>/{cell.json,verdicts.json,images.png,sheet.png}   marker, verdicts, all images, contact sheet
    subjects/plain/<set>/, priors/<set>/        plain-class copies of the sets, rendered class images
    results.json, results.md                     the tables (toyworld_lab_report)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mudi.core.methods import METHODS  # noqa: E402
from mudi.core.segmix import SegMixParams  # noqa: E402
from mudi.data.manifests import fingerprint, weight_outputs  # noqa: E402
from mudi.data.subjects import load_subjects, write_prior_metadata  # noqa: E402
from mudi.data.units import Unit, files_fingerprint, subjects_fingerprint  # noqa: E402
from mudi.errors import MudiError  # noqa: E402
from mudi.toyworld import MODEL_DIR, SUBJECTS_DIR  # noqa: E402
from mudi.toyworld.evaluate import judge_images, toy_subject  # noqa: E402
from mudi.toyworld.sets import SUBJECT_SETS, subject_folders  # noqa: E402
from mudi.toyworld.world import render_subject  # noqa: E402
from mudi.training.signals import TrainingStopped  # noqa: E402
from toyworld_lab_plan import SAMPLER, Cell, build_plan, describe_plan  # noqa: E402
from toyworld_lab_report import write_report  # noqa: E402

LAYOUTS = {"authors": SegMixParams(), "apart": SegMixParams(allow_overlap=False, scale_range=(0.5, 0.75))}
PRIOR_IMAGES = 16  # rendered class images per subject for the "MSE + prior" ablation
QUICK = {"seeds": [0], "images": 4, "steps": 10, "sampler_steps": 10, "sets": ["shared_colour"],
         "methods": ["dreambooth", "mudi"], "groups": ["methods"]}


class Lab:
    """The state of one lab run: its folder, the model, the generation backbone (loaded once) and the counts."""

    def __init__(self, out: Path, model: Path, readonly: bool = False) -> None:
        self.out, self.model, self.readonly = out, model, readonly  # readonly (--plan): writes nothing
        self._backbone = None
        self._model_fp: list | None = None
        self._plain: set[str] = set()
        self.counts = {"trained": 0, "sampled": 0, "skipped": 0}

    def model_fingerprint(self) -> list:
        """The model folder's content but its Markdown (a new toy model redoes every training and cell; an edited
        model card does not, and a copy of the pipeline without the card is the same model)."""
        if self._model_fp is None:
            self._model_fp = [row for row in files_fingerprint([self.model]) if not row[0].endswith(".md")]
        return self._model_fp

    def backbone(self):
        if self._backbone is None:
            import torch

            from mudi.adapters import registry

            self._backbone = registry.load_backbone("sd15", str(self.model), "cpu", torch.float32)
            self._backbone.pipeline.set_progress_bar_config(disable=True)
        return self._backbone

    def folders(self, set_name: str, descriptive: bool) -> list[str]:
        """The set's subject folders: the shipped ones (descriptive classes) or plain-class copies."""
        shipped = subject_folders(SUBJECTS_DIR, set_name)
        if descriptive:
            return [str(p) for p in shipped]
        out = []
        for src in shipped:
            dst = self.out / "subjects" / "plain" / set_name / src.name
            if str(dst) not in self._plain and not self.readonly:  # copied afresh once a run (edits are seen)
                self._plain.add(str(dst))
                shutil.copytree(src, dst, dirs_exist_ok=True)
                meta = yaml.safe_load((dst / "subject.yaml").read_text())
                meta.pop("descriptive_class", None)  # "olis square": the class noun alone (the toyworld key stays)
                (dst / "subject.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            out.append(str(dst))
        return out

    def prior(self, set_name: str, folders: list[str]) -> str:
        """A prior set of rendered class images (the toy world's own "red yellow square"s) for each subject."""
        folder = self.out / "priors" / set_name
        if (folder / "class_metadata.jsonl").is_file():
            return str(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ids, rows = {}, []
        for k, subject in enumerate(load_subjects(folders)):
            letter = chr(ord("a") + k)
            ids[letter] = subject.class_name
            renders = render_subject(toy_subject(subject), PRIOR_IMAGES, np.random.default_rng([1000, k]))
            for i, (image, mask) in enumerate(renders):
                Image.fromarray(image).save(folder / f"{letter}{i:02d}.png")
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"mask_{letter}{i:02d}.png")
                rows.append({"id": letter, "file_name": f"{letter}{i:02d}.png", "mask_path": f"mask_{letter}{i:02d}.png"})
        write_prior_metadata(folder, ids, rows)
        return str(folder)


def training(lab: Lab, cell: Cell) -> tuple[Unit, list[str]]:
    """The unit of the cell's LoRA (its fingerprint: the recipe, the model's and the subjects' content) and the
    subject folders it trains on."""
    recipe = cell.train_recipe()
    folder = lab.out / "lora" / cell.train_key
    folders = lab.folders(cell.set, recipe["descriptive_class"])
    subjects = load_subjects(folders)
    tokens = [s.identifier for s in subjects] if recipe["train"].get("train_modifier_tokens") else []
    fp = fingerprint({**recipe, "model": lab.model_fingerprint(), "subjects": subjects_fingerprint(subjects)})
    return Unit(folder, fp, marker=folder.with_suffix(".json"), name=f"train {cell.train_key}",
                outputs=weight_outputs(recipe["train"].get("train_lora", True), tokens)), folders


def train_unit(lab: Lab, cell: Cell) -> Path:
    """The cell's LoRA (trained here unless a finished training of the same recipe is there)."""
    from mudi.training.config import TrainConfig
    from mudi.training.loop import train

    recipe = cell.train_recipe()
    unit, folders = training(lab, cell)
    folder, values = unit.folder, dict(recipe["train"])
    if unit.is_done():
        return folder
    t0 = time.perf_counter()
    unit.start()
    prior = lab.prior(cell.set, folders) if recipe["prior"] else None
    train(TrainConfig(backbone="sd15", pretrained_model_name_or_path=str(lab.model), subjects=folders,
                      output_dir=str(folder), composition=recipe["composition"], class_data_dir=prior,
                      checkpointing_steps=values["max_train_steps"] + 1, report_to="none", progress=False,
                      device="cpu", mixed_precision="no", overwrite=True, **values))
    unit.finish(seconds=round(time.perf_counter() - t0, 1))
    lab.counts["trained"] += 1
    print(f"  trained {cell.train_key} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def prompt_of(subjects: list) -> str:
    """"a photo of a olis red yellow square and a hta blue yellow square." (world words only: no commas)."""
    return "a photo of " + " and ".join(f"a {s.phrase}" for s in subjects) + "."


def cell_unit(lab: Lab, cell: Cell) -> Unit:
    """The cell's unit: its fingerprint is its LoRA's (recipe, model, subjects) and its sampling settings."""
    folder = lab.out / "cells" / cell.key
    return Unit.of(folder, {"train": training(lab, cell)[0].fp, **cell.sample_settings()},
                   marker=folder / "cell.json", outputs=("verdicts.json", "sheet.png"), name=f"cell {cell.key}")


def finished(unit_of: Callable[[Lab, Cell], Unit], lab: Lab, cell: Cell) -> bool:
    """Whether the cell's unit is done (False where it cannot even be named yet: a plain-class copy not made)."""
    try:
        return unit_of(lab, cell).is_done()
    except MudiError:
        return False


def finished_cells(lab: Lab, cells: list[Cell]) -> set[str]:
    """The keys of ``cells`` finished with this lab's model and recipes (what ``--plan`` and the report count)."""
    return {c.key for c in cells if finished(cell_unit, lab, c)}


def run_cell(lab: Lab, cell: Cell) -> bool:
    """Draw and judge one cell unless it is done; returns whether it ran."""
    from mudi.sampling.images import generate_images
    from mudi.sampling.loras import loras_applied

    folder, s, unit = lab.out / "cells" / cell.key, cell.sample_settings(), cell_unit(lab, cell)
    if unit.is_done():
        lab.counts["skipped"] += 1
        return False
    lora = train_unit(lab, cell)
    t0 = time.perf_counter()
    unit.start()
    spec = METHODS[cell.arm.method]
    subjects = load_subjects(lab.folders(cell.set, spec.descriptive_class))[:s["num_subjects"]]
    prompt = prompt_of(subjects)
    seeds = list(range(s["images"]))
    with loras_applied(lab.backbone(), [str(lora)]):
        results = generate_images(lab.backbone(), prompt, seeds, subjects=subjects, init=s["init"],
                                  gamma=s["gamma"] or None, segmix_params=LAYOUTS[s["layout"]], negative_prompt=None,
                                  num_inference_steps=s["num_inference_steps"], guidance_scale=s["guidance_scale"],
                                  height=s["height"], width=s["width"], batch_size=32, progress=False,
                                  region_control=s["region_control"])
    images = [r.image for r in results]
    verdicts = judge_images(images, subjects)
    (folder / "verdicts.json").write_text(json.dumps({"set": cell.set, "method": cell.arm.method, "seed": cell.seed,
                                                      "prompt": prompt, "image_seeds": seeds, "verdicts": verdicts,
                                                      **s}, indent=1))
    write_sheets(images, folder)
    unit.finish(seconds=round(time.perf_counter() - t0, 1), successes=verdicts.count("correct"), n=len(verdicts))
    lab.counts["sampled"] += 1
    print(f"  {cell.set:14s} {cell.arm.group:16s} {cell.arm.name:26s} s{cell.seed}: "
          f"{verdicts.count('correct')}/{len(verdicts)} correct ({time.perf_counter() - t0:.0f} s)", flush=True)
    return True


def grid(images: list, columns: int = 8) -> np.ndarray:
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    blank = np.full_like(images[0], 255)
    return np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), 1) for r in rows], 0)


def write_sheets(images: list, folder: Path) -> None:
    """``images.png``: every image of the cell at its size (8 a row, in seed order); ``sheet.png``: the first 16,
    3× larger (the contact sheet the report shows)."""
    Image.fromarray(grid(images)).save(folder / "images.png")
    sheet = grid(images[:16])
    Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(folder / "sheet.png")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("toyworld-lab"))
    p.add_argument("--model", type=Path, default=MODEL_DIR)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="LoRA seeds")
    p.add_argument("--images", type=int, default=64, help="images per cell (image seeds 0..N-1)")
    p.add_argument("--steps", type=int, default=800, help="training steps (the toy recipe's)")
    p.add_argument("--sampler_steps", type=int, default=SAMPLER["num_inference_steps"])
    p.add_argument("--sets", nargs="+", choices=list(SUBJECT_SETS), help="subject sets (default: all)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods (default: all; also filters ablations)")
    p.add_argument("--groups", nargs="+", help="methods and/or ablations: init gamma classes loss soft_alpha "
                                               "composition_prob layout num_subjects (default: all)")
    p.add_argument("--hours", type=float, default=None, help="start no new cell after this many hours")
    p.add_argument("--max_cells", type=int, default=None, help="run at most this many new cells")
    p.add_argument("--plan", action="store_true", help="print the plan, its estimated compute and how much of it --out holds; run and write nothing")
    p.add_argument("--report", type=Path, nargs="?", const=True, default=None,
                   help="write the tables of the finished cells (and to this Markdown file), run nothing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="CI: 1 seed, 2 cells, 4 images, 10 steps")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():  # a subset named on the command line stays (e.g. --quick --methods ti)
            if k not in ("sets", "methods", "groups") or getattr(args, k) is None:
                setattr(args, k, v)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = build_plan(args.seeds, args.images, args.steps, args.sets, args.groups, args.methods, args.sampler_steps)
    lab, failed = Lab(args.out, args.model, readonly=args.plan), []
    if args.plan:
        done = finished_cells(lab, plan.unique())
        left = [c for c in plan.unique() if c.key not in done]
        trained = {c.train_key for c in plan.unique() if finished(lambda lab, c: training(lab, c)[0], lab, c)}
        print(describe_plan(plan))
        print(f"\nin {args.out}: {len(done)} of {len(plan.unique())} cells finished; "
              f"{len(left)} left, about {plan.seconds(left, trained) / 3600:.1f} CPU hours")
        return 0
    if args.report is None:
        import torch

        torch.set_num_threads(args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        t0, started = time.perf_counter(), 0
        cells = plan.unique()
        print(f"toy lab: {len(cells)} cells → {args.out} (estimated {plan.seconds() / 3600:.2f} h in all)", flush=True)
        for cell in cells:
            if args.hours is not None and time.perf_counter() - t0 > args.hours * 3600:
                print(f"toy lab: {args.hours} h spent; stopping (rerun to go on)")
                break
            if args.max_cells is not None and started >= args.max_cells:
                break
            try:
                started += run_cell(lab, cell)
            except TrainingStopped as e:  # Ctrl-C / SIGTERM inside a training: the whole lab stops, not one cell
                print(f"toy lab: {e}\ntoy lab: stopped; rerun the same command to go on", flush=True)
                return e.exit_code
            except Exception as e:  # one broken cell must not stop a run of days: reported, the rest goes on
                failed.append(cell.key)
                print(f"  FAILED {cell.set} {cell.arm.group} {cell.arm.name} s{cell.seed}: {type(e).__name__}: {e}",
                      flush=True)
        print(f"toy lab: trained {lab.counts['trained']}, sampled {lab.counts['sampled']} cell(s), skipped "
              f"{lab.counts['skipped']} finished, {len(failed)} failed, in {time.perf_counter() - t0:.0f} s",
              flush=True)
    docs = args.report if isinstance(args.report, Path) else None
    current = finished_cells(lab, plan.unique())
    digest = hashlib.sha256(json.dumps(lab.model_fingerprint()).encode()).hexdigest()[:12]
    root, model = Path(__file__).resolve().parents[1], args.model.resolve()
    shown = model.relative_to(root) if model.is_relative_to(root) else model.name  # no home folders in docs
    results = write_report(plan, args.out, docs, current, model=f"`{shown}` (weights digest {digest})")
    print((args.out / "results.md").read_text())
    return 1 if failed or not (results["cells_done"] or args.report is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
