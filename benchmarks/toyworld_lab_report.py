"""The toy lab's tables (``benchmarks/toyworld_lab.py --report``): per set and pooled over the pairs, success rate
with its Wilson 95 % interval and the per-LoRA-seed rates, and the failure kinds, from whatever cells are finished
(a partial run gives partial tables, and says how many cells are missing). No torch here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mudi.core.methods import METHODS
from mudi.data.units import Unit
from mudi.toyworld.checker import VERDICTS
from mudi.toyworld.evaluate import summarize_verdicts
from mudi.toyworld.sets import PAIRS
from toyworld_lab_plan import GROUPS, Cell, Plan

FAILURES = tuple(v for v in VERDICTS if v != "correct")
POOLED = "pairs pooled"


def cell_verdicts(out: Path, cell: Cell, current: set[str] | None = None) -> list[str] | None:
    """The checker's verdicts of a finished cell, or None (also when ``current``, the keys of the cells finished
    with this model and recipe, leaves it out: a cell of an earlier model is not reported as this one's)."""
    if current is not None and cell.key not in current:
        return None
    folder = out / "cells" / cell.key
    marker = Unit(folder, "", marker=folder / "cell.json").read()
    path = folder / "verdicts.json"
    if not marker or marker.get("status") != "done" or not path.is_file():
        return None
    return json.loads(path.read_text())["verdicts"]


def pooled(per_seed: dict[int, list[str]]) -> dict:
    """Success over every seed's images (Wilson 95 %), the per-seed rates and the verdict counts."""
    summary = summarize_verdicts([v for vs in per_seed.values() for v in vs])
    summary["per_seed"] = {str(s): summarize_verdicts(vs)["success_rate"] for s, vs in sorted(per_seed.items())}
    return summary


def collect(plan: Plan, out: Path, current: set[str] | None = None) -> dict:
    """``{group: {arm: {set or POOLED: summary}}}`` over the finished cells, and the counts."""
    found: dict[tuple[str, str, str], dict[int, list[str]]] = {}
    for cell in plan.cells:
        verdicts = cell_verdicts(out, cell, current)
        if verdicts is None:
            continue
        found.setdefault((cell.arm.group, cell.arm.name, cell.set), {})[cell.seed] = verdicts
    done = sum(cell_verdicts(out, c, current) is not None for c in plan.unique())
    tables: dict[str, dict[str, dict[str, dict]]] = {}
    for (group, arm, set_name), per_seed in found.items():
        tables.setdefault(group, {}).setdefault(arm, {})[set_name] = pooled(per_seed)
    for (group, arm), sets in _by_arm(found).items():
        pairs = {f"{s}:{seed}": vs for s, per_seed in sets.items() if s in PAIRS for seed, vs in per_seed.items()}
        if len([s for s in sets if s in PAIRS]) > 1:
            summary = summarize_verdicts([v for vs in pairs.values() for v in vs])
            tables[group][arm][POOLED] = {**summary, "sets": sorted(s for s in sets if s in PAIRS)}
    return {"cells_done": done, "cells_planned": len(plan.unique()), "seeds": plan.seeds,
            "seconds_spent": seconds_spent(plan, out), "tables": tables}


def seconds_spent(plan: Plan, out: Path) -> dict[str, float]:
    """What the finished trainings and cells took (their markers' ``seconds``), to check the plan's estimate."""
    cells = [m for c in plan.unique() if (m := Unit(out, "", marker=out / "cells" / c.key / "cell.json").read())]
    trains = [m for k in plan.trainings() if (m := Unit(out, "", marker=out / "lora" / f"{k}.json").read())]
    return {"training": round(sum(m.get("seconds", 0.0) for m in trains if m.get("status") == "done"), 1),
            "trainings": sum(m.get("status") == "done" for m in trains),
            "sampling": round(sum(m.get("seconds", 0.0) for m in cells if m.get("status") == "done"), 1)}


def _by_arm(found: dict) -> dict[tuple[str, str], dict[str, dict]]:
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for (group, arm, set_name), per_seed in found.items():
        out.setdefault((group, arm), {})[set_name] = per_seed
    return out


def fmt(s: dict | None) -> str:
    if not s:
        return "—"
    lo, hi = s["interval95"]
    seeds = s.get("per_seed")
    per = f"; seeds {'/'.join(f'{r:.2f}' for r in seeds.values())}" if seeds and len(seeds) > 1 else ""
    return f"**{s['success_rate']:.3f}** [{lo:.2f}, {hi:.2f}] ({s['successes']}/{s['n']}{per})"


def failures(s: dict | None) -> str:
    if not s:
        return "—"
    return ", ".join(f"{k} {s['verdicts'][k]}" for k in FAILURES if s["verdicts"].get(k)) or "none"


def label(group: str, arm: str) -> str:
    return f"{METHODS[arm].label} (`{arm}`)" if group == "methods" and arm in METHODS else arm


def markdown(results: dict, plan: Plan, sheets: dict[str, str]) -> str:
    """The tables as Markdown: methods × sets, failure kinds, one table per ablation, the contact sheets."""
    tables = results["tables"]
    lines = [f"Toy lab: {results['cells_done']} of {results['cells_planned']} cells finished; LoRA seeds "
             f"{results['seeds']}, {plan.cells[0].num_images if plan.cells else 0} images a cell, "
             f"{plan.cells[0].steps if plan.cells else 0} training steps; compute spent: "
             f"{results['seconds_spent']['training'] / 60:.1f} min training ({results['seconds_spent']['trainings']} "
             f"LoRAs), {results['seconds_spent']['sampling'] / 60:.1f} min sampling and judging. Success = the checker's `correct` "
             "(every subject, each itself, nothing else); **rate** [Wilson 95 %] (successes/images; per-seed rates)."
             + (f" Model: {results['model']}." if results.get("model") else ""), ""]
    for group in GROUPS:
        if group not in tables:
            continue
        arms = [a for a in dict.fromkeys(c.arm.name for c in plan.cells if c.arm.group == group) if a in tables[group]]
        sets = [s for s in dict.fromkeys(c.set for c in plan.cells if c.arm.group == group)]
        cols = sets + ([POOLED] if any(POOLED in tables[group][a] for a in arms) else [])
        lines += [f"### {'Methods' if group == 'methods' else 'Ablation: ' + group}", "",
                  "| arm | " + " | ".join(cols) + " | failures (" + (POOLED if POOLED in cols else cols[0]) + ") |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for a in arms:
            row = tables[group][a]
            lines.append(f"| {label(group, a)} | " + " | ".join(fmt(row.get(c)) for c in cols) +
                         f" | {failures(row.get(POOLED if POOLED in cols else cols[0]))} |")
        lines.append("")
    if sheets:
        lines += ["### Contact sheets (image seeds 0-15, first LoRA seed)", ""]
        lines += [f"- {name}: ![{name}]({path})" for name, path in sheets.items()]
    return "\n".join(lines) + "\n"


def write_report(plan: Plan, out: Path, docs: Path | None = None, current: set[str] | None = None,
                 model: str | None = None) -> dict:
    """``out/results.{json,md}``; with ``docs``, the Markdown there too and one contact sheet beside it
    (``<docs stem>.png``: a row of image seeds 0-15 per method of the first LoRA seed, in the order listed).
    ``current``: the cells finished with this model (others are left out); ``model``: named in the header."""
    results = {**collect(plan, out, current), "model": model}
    (out / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    first = plan.seeds[0] if plan.seeds else None
    sheet_cells = {f"{c.set} · {label(c.arm.group, c.arm.name)}": c for c in plan.cells
                   if c.arm.group == "methods" and c.seed == first and cell_verdicts(out, c, current) is not None}
    local = {n: f"cells/{c.key}/sheet.png" for n, c in sheet_cells.items()}
    (out / "results.md").write_text(markdown(results, plan, local))
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        text = markdown(results, plan, {})
        if sheet_cells:
            rows = [_first_row(out / "cells" / c.key / "images.png") for c in sheet_cells.values()]
            width = max(x.shape[1] for x in rows)  # a grey line under each cell's row
            sheet = np.concatenate([np.pad(np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255),
                                           ((0, 2), (0, 0), (0, 0)), constant_values=128) for r in rows], 0)
            small = Image.fromarray(sheet).quantize(256)  # flat colours: a palette keeps it small in the repository
            small.resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(docs.with_suffix(".png"),
                                                                                      optimize=True)
            text += (f"\n### Contact sheet\n\n![contact sheet]({docs.with_suffix('.png').name})\n\n*Image seeds 0-15 of "
                     f"LoRA seed {first}, one row per cell, top to bottom: {'; '.join(sheet_cells)}.*\n")
        docs.write_text(text)
    return results


def _first_row(path: Path, size: int = 32) -> np.ndarray:
    """Image seeds 0-15 of a cell's ``images.png`` (8 a row) as one row."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    rows = [grid[i:i + size] for i in range(0, min(grid.shape[0], 2 * size), size)]
    return np.concatenate(rows, 1)
