"""The benchmark's tables: the paper's Fig. 6 (means over every image of a method) and a per-pair breakdown,
as Markdown, CSV and JSON in ``OUTPUT_DIR/results/``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from mudi.benchmark.config import PAPER_EVALUATE, TABLE_COLUMNS, BenchmarkConfig
from mudi.config import to_dict
from mudi.core.methods import METHODS
from mudi.io import save_image_atomic, write_json_atomic, write_text_atomic
from mudi.scoring.models import metric_name
from mudi.scoring.step_selection import CURVE_FILE, SELECTION_DIR
from mudi.visualize import line_chart


def build_tables(config: BenchmarkConfig, cells: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """Overall (mean over all images of a method, as the paper's 400) and per-pair means, plus notes for
    every column that is n/a."""
    pairs = list(dict.fromkeys(p for p, _ in cells))
    metrics = [m for m, _ in TABLE_COLUMNS]
    extra = sorted({m for r in cells.values() for m in r.get("means", {}) if m not in metrics})
    notes: dict[str, str] = {}
    ev = {**PAPER_EVALUATE, **config.evaluate}
    requested = {metric_name("embedder", n): n for n in ev.get("embedders", [])}
    requested.update({metric_name("text_scorer", n): n for n in ev.get("text_scorers", [])})
    for r in cells.values():
        for m, why in r.get("unavailable", {}).items():
            notes.setdefault(m, f"model unavailable: {why}")
    for m in metrics:
        if m not in notes and not any(m in r.get("means", {}) for r in cells.values()):
            if m in requested:
                notes[m] = f"not computed ({requested[m]})"
            else:
                hint = {"dnc_ds": "add dreamsim to evaluate.embedders (pip install 'mudi[dreamsim]')",
                        "dnc_dino": "add dinov2 to evaluate.embedders",
                        "image_reward": "add image_reward to evaluate.text_scorers (pip install 'mudi[image-reward]')",
                        "clip_score": "add clip to evaluate.text_scorers"}[m]
                notes[m] = f"not requested: {hint}"

    def agg(rows: list[dict]) -> dict:
        out: dict[str, Any] = {"num_images": sum(r.get("num_images", 0) for r in rows)}
        for m in metrics + extra:
            vals = [(r["means"][m], r["num_images"]) for r in rows if m in r.get("means", {})]
            n = sum(w for _, w in vals)
            out[m] = sum(v * w for v, w in vals) / n if n else None
        fails: dict[str, int] = {}
        for r in rows:
            for f, v in r.get("failure_counts", {}).items():
                fails[f] = fails.get(f, 0) + v
        out["failure_counts"] = fails
        return out

    overall = {m: {"label": METHODS[m].label, **agg([cells[(p, m)] for p in pairs if (p, m) in cells])}
               for m in config.methods}
    per_pair = {p: {m: {"label": METHODS[m].label, **agg([cells[(p, m)]])} for m in config.methods
                    if (p, m) in cells} for p in pairs}
    return {"columns": [{"metric": m, "title": t} for m, t in TABLE_COLUMNS] + [{"metric": m, "title": m}
                                                                                   for m in extra],
            "methods": overall, "pairs": per_pair, "notes": notes,
            "step_selection": {f"{p}/{m}": {k: r["step_selection"][k] for k in ("steps", "scores", "best_step", "scorer")}
                               for (p, m), r in cells.items() if "step_selection" in r}}


def _step_selection_md(selections: dict[str, dict]) -> str:
    """per_pair.md's section: each cell's validation score by step, the chosen step and its curve."""
    if not selections:
        return ""
    lines = ["## Step selection\n", "Validation score of each snapshot (seeds apart from the evaluation seeds); the "
             "**bold** step generated the cell's images.\n"]
    for cell, r in selections.items():
        pair, method = cell.split("/", 1)
        row = " | ".join((f"**{v:.3f}**" if s == r["best_step"] else f"{v:.3f}") if v is not None else "-"
                         for s, v in zip(r["steps"], r["scores"]))
        lines += [f"### {cell} ({r['scorer']}): step {r['best_step']}\n",
                  "| step | " + " | ".join(str(s) for s in r["steps"]) + " |",
                  "|---|" + "---|" * len(r["steps"]), f"| score | {row} |\n",
                  f"![score by step](../{pair}/{method}/{SELECTION_DIR}/{CURVE_FILE})\n"]
    return "\n".join(lines)


def _markdown_table(rows: dict[str, dict], columns: list[dict], notes: dict[str, str], marks: dict[str, str]) -> str:
    head = "| Method | " + " | ".join(c["title"] for c in columns) + " | images | count errors | mixed |"
    lines = [head, "|" + "---|" * (len(columns) + 4)]
    for r in rows.values():
        cells = []
        for c in columns:
            v = r.get(c["metric"])
            cells.append(f"{v:.3f}" if v is not None else f"n/a{marks.get(c['metric'], '')}")
        fails = r.get("failure_counts", {})
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['num_images']} | {fails.get('count', 0)} | "
                     f"{fails.get('mixed', 0)} |")
    return "\n".join(lines)


def write_tables(config: BenchmarkConfig, tables: dict[str, Any]) -> Path:
    """``results.md``, ``results.csv``, ``results.json``, ``per_pair.md``, ``per_pair.csv`` in ``results/``."""
    out = Path(config.output_dir) / "results"
    columns, notes = tables["columns"], tables["notes"]
    marks = {m: f"[^{i + 1}]" for i, m in enumerate(notes)}
    foot = "\n".join(f"[^{i + 1}]: {m}: {why}" for i, (m, why) in enumerate(notes.items()))
    n_pairs = len(tables["pairs"])
    title = (f"# MuDI benchmark: {config.backbone}, {n_pairs} pair(s) × {config.num_prompts or 'all'} prompt(s) × "
             f"{config.num_seeds} seed(s)\n\nMeans over all generated images of each method (paper Fig. 6; "
             "† = averaged over both subject orders in the prompt). count errors: images whose number of "
             "detections differs from the number of subjects (scored 0); mixed: identity-mixing flags of "
             "`mudi evaluate`.\n\n")
    write_text_atomic(out / "results.md", title + _markdown_table(tables["methods"], columns, notes, marks)
                      + ("\n\n" + foot if foot else "") + "\n")
    parts = ["# Per-pair breakdown\n"]
    for pair, rows in tables["pairs"].items():
        parts.append(f"## {pair}\n\n" + _markdown_table(rows, columns, notes, marks) + "\n")
    parts.append(_step_selection_md(tables.get("step_selection", {})))
    write_text_atomic(out / "per_pair.md", "\n".join(parts) + ("\n" + foot + "\n" if foot else ""))

    metric_keys = [c["metric"] for c in columns]

    def csv_text(rows: list[dict], lead: list[str]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*lead, "label", *metric_keys, "num_images", "count_failures",
                                            "mixed_failures"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r[k] for k in lead}, "label": r["label"], "num_images": r["num_images"],
                        **{m: ("n/a" if r.get(m) is None else f"{r[m]:.4f}") for m in metric_keys},
                        "count_failures": r["failure_counts"].get("count", 0),
                        "mixed_failures": r["failure_counts"].get("mixed", 0)})
        return buf.getvalue()

    write_text_atomic(out / "results.csv", csv_text([{"method": m, **r} for m, r in tables["methods"].items()],
                                                    ["method"]))
    write_text_atomic(out / "per_pair.csv", csv_text([{"pair": p, "method": m, **r}
                                                      for p, rows in tables["pairs"].items()
                                                      for m, r in rows.items()], ["pair", "method"]))
    write_json_atomic(out / "results.json", {**tables, "config": to_dict(config)})
    return out


def write_study_tables(config: BenchmarkConfig, table: dict[str, Any]) -> Path:
    """The num_subjects study (:mod:`mudi.benchmark.study`): ``num_subjects.md`` (success rate by method × N, then
    the details), ``num_subjects.csv`` (one row per method and N), ``num_subjects.json`` and ``num_subjects.png``
    (success rate against N, one line per method) in ``results/``."""
    out = Path(config.output_dir) / "results"
    ns, rows = table["num_subjects"], table["rows"]
    by = {(r["method"], r["num_subjects"]): r for r in rows}

    def rate(r: dict) -> str:
        return "n/a" if r["success_rate"] is None else f"{r['success_rate']:.3f} ({r['successes']}/{r['num_images']})"

    labels = {r["method"]: r["label"] for r in rows}
    lines = [f"# Success rate by number of subjects: {config.backbone}, {table['pair']}\n",
             f"Success = {table['rule']} (an automatic proxy for the paper's D&C filter + human judgement, "
             "Appendix B.9; docs/benchmark.md).\n",
             "| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    lines += [f"| {labels[m]} | " + " | ".join(rate(by[(m, n)]) for n in ns) + " |" for m in table["methods"]]
    lines += ["", "| Method | N | images | successes | count errors | mixed | duplicate | mean D&C |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['num_subjects']} | {r['num_images']} | {r['successes']} | {r['count_errors']} | "
              f"{r['mixed']} | {r['duplicate']} | " + ("n/a" if r["mean_dnc"] is None else f"{r['mean_dnc']:.3f}")
              + " |" for r in rows]
    if table["metric"] is None:
        why = "; ".join(f"{k}: {v}" for k, v in table.get("unavailable", {}).items()) or "no embedder requested"
        lines += ["", f"No D&C metric could be computed ({why}), so no success rate."]
    write_text_atomic(out / "num_subjects.md", "\n".join(lines) + "\n")
    buf = io.StringIO()
    keys = ["method", "label", "num_subjects", "num_images", "successes", "success_rate", "count_errors", "mixed",
            "duplicate", "mean_dnc"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("n/a" if r[k] is None else f"{r[k]:.4f}" if isinstance(r[k], float) else r[k]) for k in keys})
    write_text_atomic(out / "num_subjects.csv", buf.getvalue())
    write_json_atomic(out / "num_subjects.json", {**table, "config": to_dict(config)})
    chart = line_chart({labels[m]: [by[(m, n)]["success_rate"] for n in ns] for m in table["methods"]},
                       [str(n) for n in ns], f"success rate by number of subjects ({table['pair']})",
                       x_title="subjects")
    save_image_atomic(out / "num_subjects.png", chart)
    return out
