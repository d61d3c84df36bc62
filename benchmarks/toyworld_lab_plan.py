"""The toy lab's plan (issue 24, item 3): every cell — a subject set × a method or ablation arm × a LoRA seed —
in the order it runs, with its estimated compute. No torch here: ``benchmarks/toyworld_lab.py --plan`` prints it.

A **cell** is the images one LoRA draws with one sampler setting, judged by the toy checker. Cells that train the
same recipe share one LoRA (a *training*): the γ sweep, the init on/off and the init's layout all sample the
Seg-Mix LoRA of ``mudi``; ``db-region`` and ``mudi-no-segmix`` sample DreamBooth's. Cells whose training and
sampling are equal are one cell (the init ablation's "on" *is* ``mudi``), run once, reported in every table that
names it.

Arms:

- **methods**: every method of :data:`mudi.core.methods.METHODS` (the paper's comparison and each baseline as it
  lands: DreamBooth, Cut-Mix, Seg-Mix alone, MuDI, DB + region control, Textual Inversion, Custom Diffusion, ...)
  on every shipped toy set (:data:`mudi.toyworld.sets.SUBJECT_SETS`: four pairs, a 3- and a 4-subject set);
- **ablations** (the paper's Table 1, Fig. 7, Appendix B.9) on the two most similar pairs, each against MuDI
  (Seg-Mix + the mean-shifted init, descriptive classes): init on/off, γ sweep, descriptive vs plain classes,
  MSE vs MSE + prior vs DCO, ``soft_alpha``, composition probability, the init's layout; and the number of
  subjects (2, 3, 4: the LoRAs of the 4-subject set, sampled with its first N subjects, γ = B.9's).

The recipe is ``mudi demo``'s toy recipe (``mudi/samples/demo-toyworld.yaml``) with mudi's defaults everywhere else
(the authors' init layout, γ = 1 for two subjects): nothing here is tuned on the lab.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mudi.core.init_latents import default_gamma
from mudi.core.methods import METHODS
from mudi.toyworld.sets import PAIRS, SUBJECT_SETS

SIMILAR = PAIRS[:2]  # the two most similar pairs (mudi.toyworld.sets orders the pairs by similarity)
N_SUBJECTS_SET = "four"  # the number-of-subjects ablation samples the first N of this set
#: mudi demo's toy training recipe (the TrainConfig keys every method shares; a method's own recipe comes over it),
#: with mudi's defaults of the keys the ablations vary (so the ablation's default arm shares MuDI's LoRA)
RECIPE: dict[str, Any] = {"resolution": 32, "rank": 8, "learning_rate": 1e-3, "train_batch_size": 8,
                          "max_train_steps": 800, "composition_prob": 0.3, "soft_alpha": 1.0, "loss": "mse"}
SAMPLER: dict[str, Any] = {"num_inference_steps": 30, "guidance_scale": 4.0, "height": 32, "width": 32}
#: measured on this machine (2 shared cores, one thread, 2026-12-06: six 800-step trainings took 171 s each, 144
#: images 78 s with the checker): a training step at batch 8, an image at 30 sampler steps (batch 32), and what each
#: training and each cell costs besides (model loads, the checker)
SECONDS_PER_STEP = 0.20
SECONDS_PER_IMAGE = 0.45
SECONDS_PER_TRAINING = 10.0
SECONDS_PER_CELL = 2.0
GROUPS = ("methods", "init", "gamma", "classes", "loss", "soft_alpha", "composition_prob", "layout", "num_subjects")


@dataclass(frozen=True)
class Arm:
    """One row of a table: a method, possibly changed by an ablation."""

    group: str  # "methods" or the ablation (GROUPS)
    name: str  # the row's label in its table
    method: str  # METHODS key: composition, init, classes, region control, its own training recipe
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig keys over the method's
    gamma: float | None = None  # the init's γ (None: mudi's default for the number of subjects)
    num_subjects: int | None = None  # sample the first N subjects of the set (None: all)
    layout: str = "authors"  # the init's compositions: authors (mudi's default) | apart (no overlap, 50-75 %)
    prior: bool = False  # prior preservation with the lab's rendered class images


def method_arms(methods: list[str] | None = None) -> list[Arm]:
    return [Arm("methods", m, m) for m in (methods or list(METHODS))]


def ablation_arms() -> list[Arm]:
    """The ablations of MuDI on the similar pairs (number of subjects: on the 4-subject set)."""
    arms = [Arm("init", "init on (MuDI)", "mudi"), Arm("init", "init off (Seg-Mix alone)", "mudi-no-init")]
    arms += [Arm("gamma", f"γ {g:g}", "mudi", gamma=g) for g in (0.5, 1.0, 2.0, 3.0)]
    arms += [Arm("classes", "descriptive (MuDI)", "mudi"), Arm("classes", "plain", "mudi-no-desc")]
    arms += [Arm("loss", "MSE (MuDI)", "mudi"), Arm("loss", "MSE + prior", "mudi", prior=True),
             Arm("loss", "DCO", "mudi", train=(("loss", "dco"),))]
    arms += [Arm("soft_alpha", f"soft_alpha {a:g}", "mudi", train=(("soft_alpha", a),)) for a in (1.0, 0.5, 0.0)]
    arms += [Arm("composition_prob", f"p {p:g}", "mudi", train=(("composition_prob", p),)) for p in (0.1, 0.3, 0.6, 1.0)]
    arms += [Arm("layout", "authors' (MuDI)", "mudi"), Arm("layout", "apart, 50-75 %", "mudi", layout="apart")]
    arms += [Arm("num_subjects", f"{m}, N {n}", m, num_subjects=n) for m in ("mudi", "dreambooth") for n in (2, 3, 4)]
    return arms


@dataclass(frozen=True)
class Cell:
    set: str
    arm: Arm
    seed: int
    num_images: int
    steps: int  # training steps
    sampler_steps: int = SAMPLER["num_inference_steps"]

    def train_recipe(self) -> dict[str, Any]:
        """Everything the cell's LoRA depends on (equal recipes share one training)."""
        spec = METHODS[self.arm.method]
        values = {**RECIPE, "max_train_steps": self.steps, **spec.train, **dict(self.arm.train), "seed": self.seed}
        return {"set": self.set, "composition": spec.composition, "descriptive_class": spec.descriptive_class,
                "prior": self.arm.prior, "train": dict(sorted(values.items()))}

    def sample_settings(self) -> dict[str, Any]:
        """Everything the cell's images depend on besides its LoRA."""
        spec = METHODS[self.arm.method]
        n = self.arm.num_subjects or len(SUBJECT_SETS[self.set])
        init = "none" if spec.init == "none" else "mean_shifted"  # auto = the SD family's: mean-shifted
        gamma = (self.arm.gamma if self.arm.gamma is not None else default_gamma(n)) if init != "none" else 0.0
        return {"num_subjects": n, "init": init, "gamma": gamma, "region_control": spec.region_control,
                "layout": self.arm.layout if init != "none" or spec.region_control else "authors",
                "images": self.num_images, **SAMPLER, "num_inference_steps": self.sampler_steps}

    @property
    def train_key(self) -> str:
        r = self.train_recipe()
        tag = f"{r['composition']}{'' if r['descriptive_class'] else '-plain'}{'-prior' if r['prior'] else ''}"
        return f"{self.set}-{tag}-s{self.seed}-{_digest(r)}"

    @property
    def key(self) -> str:
        s = self.sample_settings()
        return f"{self.train_key}-{s['init'][:4]}-g{s['gamma']:g}-n{s['num_subjects']}-{_digest(s)}"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass
class Plan:
    cells: list[Cell]  # every (set, arm, seed) in priority order; several may share one key
    seeds: list[int] = field(default_factory=list)

    def unique(self) -> list[Cell]:
        """One cell per key, in priority order: what runs."""
        seen: dict[str, Cell] = {}
        for c in self.cells:
            seen.setdefault(c.key, c)
        return list(seen.values())

    def trainings(self) -> list[str]:
        return list(dict.fromkeys(c.train_key for c in self.unique()))

    def seconds(self, cells: list[Cell] | None = None, trained: set[str] = frozenset()) -> float:
        """Estimated compute of ``cells`` (default: all) on this machine, each training counted once (none of
        those in ``trained``)."""
        cells = self.unique() if cells is None else cells
        train = {c.train_key: c.steps * SECONDS_PER_STEP + SECONDS_PER_TRAINING for c in cells
                 if c.train_key not in trained}
        sample = sum(c.num_images * SECONDS_PER_IMAGE * c.sampler_steps / 30 + SECONDS_PER_CELL for c in cells)
        return sum(train.values()) + sample


def build_plan(seeds: list[int], num_images: int, steps: int, sets: list[str] | None = None,
               groups: list[str] | None = None, methods: list[str] | None = None,
               sampler_steps: int = SAMPLER["num_inference_steps"]) -> Plan:
    """Every cell of the lab, in the order it runs: LoRA seed first (a whole first seed before any second), then
    the methods on the pairs, the ablations, the methods on the 3- and 4-subject sets."""
    sets = sets or list(SUBJECT_SETS)
    groups = groups or list(GROUPS)
    rows: list[tuple[tuple, Cell]] = []
    for si, seed in enumerate(seeds):
        for arm in method_arms(methods) + ablation_arms():
            if arm.group not in groups or (methods and arm.method not in methods):
                continue
            for set_name in _sets_of(arm, sets):
                stage = 0 if arm.group == "methods" and set_name in PAIRS else (1 if arm.group != "methods" else 2)
                rank = (si, stage, GROUPS.index(arm.group), list(SUBJECT_SETS).index(set_name))
                rows.append((rank, Cell(set_name, arm, seed, num_images, steps, sampler_steps)))
    rows.sort(key=lambda r: r[0])
    return Plan([c for _, c in rows], list(seeds))


def _sets_of(arm: Arm, sets: list[str]) -> list[str]:
    if arm.group == "methods":
        return sets
    if arm.group == "num_subjects":
        return [N_SUBJECTS_SET] if N_SUBJECTS_SET in sets else []
    return [s for s in SIMILAR if s in sets]


def describe_plan(plan: Plan) -> str:
    """The plan as text: cells and trainings per group, the estimated hours, the first cells to run."""
    unique = plan.unique()
    lines = [f"toy lab plan: {len(plan.cells)} table entries = {len(unique)} cells ({len(plan.trainings())} "
             f"trainings) over LoRA seeds {plan.seeds}; estimated {plan.seconds() / 3600:.1f} CPU hours "
             f"(one thread; {SECONDS_PER_STEP} s a training step, {SECONDS_PER_IMAGE} s an image)", "",
             f"{'group':18s} {'entries':>7s} {'new cells':>9s} {'trainings':>9s} {'hours':>6s}"]
    done: set[str] = set()
    trained: set[str] = set()
    for g in GROUPS:
        cells = [c for c in plan.cells if c.arm.group == g]
        if not cells:
            continue
        new = [c for c in dict((c.key, c) for c in cells).values() if c.key not in done]
        new_train = {c.train_key for c in new} - trained
        hours = plan.seconds(new, trained) / 3600
        lines.append(f"{g:18s} {len(cells):7d} {len(new):9d} {len(new_train):9d} {hours:6.2f}")
        done |= {c.key for c in new}
        trained |= new_train
    per_seed = plan.seconds([c for c in unique if c.seed == plan.seeds[0]]) / 3600 if plan.seeds else 0.0
    lines += ["", f"one LoRA seed: {per_seed:.1f} h; cells run in this order (seed first), the first ten:"]
    lines += [f"  {c.set:14s} {c.arm.group:16s} {c.arm.name:26s} seed {c.seed}" for c in unique[:10]]
    return "\n".join(lines)
