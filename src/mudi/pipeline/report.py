"""The one self-contained HTML report of a ``mudi run`` (every picture inlined, so the file can be mailed).

Sections, in order: the notice, the stages (done / skipped / resumed, seconds), what the describe stage wrote
(descriptive classes and captions: written / kept / rejected), the subjects' masks with their status, Seg-Mix compositions, training (loss curve, validation images, snapshots), the generated images beside
their init compositions, the D&C / CLIP table with the best and worst images, the resolved config and versions.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mudi.core.methods import METHODS
from mudi.data.descriptions import read_describe_report
from mudi.data.images import read_image
from mudi.environment import collect
from mudi.io import write_bytes_atomic
from mudi.pipeline.state import MARKER, REPORT_FILE, RUN_FILE, RunState
from mudi.sampling.init import resolve_init
from mudi.scoring.report import thumbnail_data_uri
from mudi.scoring.step_selection import CURVE_FILE, SELECTION_DIR
from mudi.toyworld.evaluate import read_result
from mudi.training.loop import read_metrics
from mudi.visualize import loss_curve_svg, overlay_mask

SECTIONS = ("notice", "stages", "descriptions", "masks", "segmix", "training", "generated", "scores", "config")
STATUS_COLORS = {"ok": "#1a7f37", "kept_user_mask": "#1a7f37", "multiple_detections": "#9a6700",
                 "no_detection": "#cf222e", "tiny_mask": "#cf222e", "error": "#cf222e", "rejected": "#cf222e"}
CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1300px;color:#1f2328}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
.notice{background:#fff8c5;border:1px solid #d4a72c;padding:12px 16px;border-radius:6px}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:12px}
figure img{display:block;border:1px solid #d0d7de;image-rendering:pixelated}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
.pair{display:flex;gap:2px}.bad{color:#cf222e}pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:12px}"""


def _img(path: Path, side: int = 192, mask: Path | None = None) -> str:
    rgb = read_image(path)[0]
    if mask is not None and mask.is_file():
        m = np.asarray(read_image(mask)[0])[..., 0] > 127
        if m.shape == rgb.shape[:2]:
            rgb = np.asarray(overlay_mask(Image.fromarray(rgb), m))
    h, w = rgb.shape[:2]
    width = round(side * w / max(h, w))  # small images (tiny models) are shown enlarged, not as specks
    return f'<img src="{thumbnail_data_uri(rgb, max_side=side)}" width="{width}" alt="{html.escape(path.name)}">'


def _figure(inner: str, caption: str) -> str:
    return f"<figure>{inner}<figcaption>{caption}</figcaption></figure>"


def _stages(st: RunState) -> str:
    rows = []
    order = {"describe": -1, "segment": 0, "prior": 1, "segmix": 2, "train": 3, "generate": 4, "evaluate": 5}
    markers = sorted(st.out.rglob(MARKER), key=lambda m: (order.get(m.relative_to(st.out).parts[0], 9), str(m)))
    for marker in markers:
        data = json.loads(marker.read_text(encoding="utf-8"))
        unit = marker.parent.relative_to(st.out).as_posix()
        did = st.did.get(unit, "not needed" if data.get("status") == "done" else "")
        rows.append(f"<tr><td>{html.escape(unit)}</td><td>{data.get('status')}</td><td>{did}</td>"
                    f"<td>{data.get('seconds', '')}</td></tr>")
    return ("<table><tr><th>unit</th><th>status</th><th>this time</th><th>seconds</th></tr>"
            + "".join(rows) + "</table>")


def _descriptions(st: RunState) -> str:
    """What the describe stage did: per subject its descriptive class and each photo's caption, with the status
    (``written``, ``unchanged``, ``kept`` — hand-written —, ``rejected`` with the reason)."""
    if not st.config.use_describe:
        return "<p>not described by this run (use_describe: false): the subjects' own classes and captions</p>"
    data = read_describe_report(st.out / "describe")
    if data is None:
        return "<p>not described yet</p>"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(data.get("counts", {}).items()))
    rows = []
    for i in data["items"]:
        status = str(i.get("status"))
        text = i.get("note") if status == "rejected" else i.get("value")
        rows.append(f"<tr><td>{html.escape(str(i.get('subject')))}</td><td>{html.escape(str(i.get('field')))}</td>"
                    f"<td style='color:{STATUS_COLORS.get(status, '#1f2328')}'>{html.escape(status)}</td>"
                    f"<td>{html.escape(str(text or ''))}</td></tr>")
    errors = "".join(f"<li>{html.escape(str(e))}</li>" for e in data.get("errors", []))
    model = f" ({html.escape(str(data['model']))})" if data.get("model") else ""
    return (f"<p>{html.escape(str(data.get('provider')))}{model}, {data.get('attempts')} attempt(s): {html.escape(counts)}. <i>kept</i>: hand-written, left as it was; "
            "<i>rejected</i>: not written (the subject keeps what its subject.yaml says).</p>"
            + (f"<ul class='bad'>{errors}</ul>" if errors else "")
            + "<table><tr><th>subject</th><th>value</th><th>status</th><th>text, or why it was rejected</th></tr>"
            + "".join(rows) + "</table>")


def _masks(st: RunState) -> str:
    parts = []
    for folder in (st.subjects_dir / n for n in st.names):
        report = folder / "segment" / "segment_report.json"
        if not report.is_file():
            continue
        data = json.loads(report.read_text(encoding="utf-8"))
        figs = []
        for r in data.get("images", []):
            image = Path(r["image"])
            image = image if image.is_absolute() else folder / image.name
            mask = Path(r["mask_path"]) if r.get("mask_path") else None
            color = STATUS_COLORS.get(r["status"], "#1f2328")
            frac = f", mask {r['mask_fraction']:.0%}" if r.get("mask_fraction") is not None else ""
            figs.append(_figure(f"<div class='pair'>{_img(image, 120)}{_img(image, 120, mask)}</div>",
                                f'{html.escape(image.name)}: <b style="color:{color}">{r["status"]}</b>{frac}'))
        parts.append(f"<h3>{html.escape(folder.name)}</h3><div class='row'>{''.join(figs)}</div>")
    return "".join(parts) or "<p>not segmented yet</p>"


def _segmix(st: RunState) -> str:
    rows_file = st.out / "segmix" / "segmix.jsonl"
    if not rows_file.is_file():
        return "<p>no Seg-Mix preview (segmix_preview: 0)</p>"
    figs = []
    for line in rows_file.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        figs.append(_figure(_img(st.out / "segmix" / r["image"], 192), html.escape(r["prompt"])))
    return ("<p>Random compositions of the segmented subjects, drawn as training draws them (with probability "
            "p a training image is one of these).</p><div class='row'>" + "".join(figs) + "</div>")


def _training(st: RunState) -> str:
    parts = []
    for comp in st.train_dirs:
        folder = st.out / "train" / comp  # the training folder (train_dirs may point at a chosen snapshot)
        rows = read_metrics(folder)
        marker = json.loads((folder / MARKER).read_text()) if (folder / MARKER).is_file() else {}
        val = sorted((folder / "validation").glob("step-*.png")) if (folder / "validation").is_dir() else []
        snaps = sorted(p.name for p in folder.glob("snapshot-*") if p.is_dir())
        steps = rows[-1]["step"] if rows else 0
        sec = np.mean([r["step_seconds"] for r in rows if "step_seconds" in r]) if rows else float("nan")
        parts.append(f"<h3>{comp} LoRA ({html.escape(str(folder.relative_to(st.out)))})</h3>"
                     f"<p>{steps} steps, {marker.get('status', 'not started')}, {sec:.2f} s/step</p>"
                     + loss_curve_svg(rows))
        if val:
            parts.append("<p>Validation images during training:</p><div class='row'>" + "".join(
                _figure(_img(p, 160), p.stem) for p in val) + "</div>")
        if snaps:
            parts.append("<p>Loadable snapshots: " + ", ".join(snaps) + "</p>")
        if comp in st.selections:
            parts.append(_selection(st.selections[comp], folder / SELECTION_DIR / CURVE_FILE))
    return "".join(parts) or "<p>not trained yet</p>"


def _selection(record: dict, curve: Path) -> str:
    """The step selection's score-vs-step curve and table (step_selection)."""
    cells = "".join(f"<tr><td>{s}</td><td>{'-' if v is None else f'{v:.4f}'}</td></tr>"
                    for s, v in zip(record["steps"], record["scores"]))
    img = _figure(_img(curve, 420), "validation score by step") if curve.is_file() else ""
    return (f"<div class='step-selection'><p>Step selection by {html.escape(record['scorer'])} on seeds "
            f"{record['seeds']}: <b>step {record['best_step']}</b> is used for generation.</p>{img}"
            f"<table><tr><th>step</th><th>{html.escape(record['scorer'])}</th></tr>{cells}</table></div>")


def _scores(st: RunState) -> tuple[str, str]:
    """The generated images per method and prompt (beside their inits), and the score table."""
    gen, table, cards, toys = [], [], [], []
    metrics: list[str] = []
    for method in st.config.methods:
        for k, prompt in enumerate(st.config.prompts):
            gdir, edir = st.out / "generate" / method / f"p{k:02d}", st.out / "evaluate" / method / f"p{k:02d}"
            summary = json.loads((edir / "summary.json").read_text()) if (edir / "summary.json").is_file() else {}
            for m in summary.get("means", {}):
                if m not in metrics:
                    metrics.append(m)
            toy = read_result(edir) or {}
            figs = []
            for meta_path in sorted(gdir.glob("[0-9]*.json")):
                meta = json.loads(meta_path.read_text())
                ev = edir / meta_path.name
                score = json.loads(ev.read_text()) if ev.is_file() else {}
                vals = {m: v["score"] for m, v in score.get("metrics", {}).items()} | score.get("text", {})
                label = ", ".join(f"{m} {v:.3f}" for m, v in vals.items()) or "not scored"
                fails = " ".join(score.get("failures", []))
                inner = _img(gdir / meta["image"], 192)
                if meta.get("init_image"):
                    inner = f"<div class='pair'>{_img(gdir / meta['init_image'], 192)}{inner}</div>"
                verdict = toy.get("images", {}).get(meta["image"])
                if verdict is not None:
                    label = ("correct" if verdict == "correct" else f"<span class='bad'>{verdict}</span>") + \
                        ("" if label == "not scored" else f", {label}")
                caption = f"seed {meta['seed']}: {label}" + (f" <span class='bad'>{fails}</span>" if fails else "")
                figs.append(_figure(inner, caption))
                if vals:
                    cards.append((vals, method, meta, gdir, caption))
            init = resolve_init(METHODS[method].init, backbone_name=st.config.backbone)  # auto: the family's
            gen.append(f"<h3>{html.escape(METHODS[method].label)} — {html.escape(prompt)}</h3>"
                       f"<p>init: {init}{' (left: the init composition)' if init != 'none' else ''}"
                       f"</p><div class='row'>{''.join(figs) or 'no images yet'}</div>")
            if summary:
                fails = summary.get("failure_counts", {})
                table.append((method, prompt, summary.get("num_images", 0), summary["means"], fails))
            if toy:
                toys.append((method, prompt, toy))
    out = _toy_table(toys)
    if not table:
        return "".join(gen), out or "<p>not evaluated yet</p>"
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><td>{html.escape(METHODS[m].label)}</td><td>{html.escape(p)}</td><td>{n}</td>"
        + "".join(f"<td>{means[x]:.4f}</td>" if x in means else "<td></td>" for x in metrics)
        + f"<td>{', '.join(f'{k} {v}' for k, v in fails.items() if v) or 'none'}</td></tr>"
        for m, p, n, means, fails in table)
    out += (f"<table><tr><th>method</th><th>prompt</th><th>images</th>{head}<th>failures</th></tr>{body}</table>")
    key = metrics[0]
    ranked = sorted((c for c in cards if key in c[0]), key=lambda c: c[0][key])
    n = min(3, len(ranked) // 2 or len(ranked))
    for title, chosen in (("Best", ranked[::-1][:n]), ("Worst", ranked[:n])):
        out += f"<h3>{title} by {html.escape(key)}</h3><div class='row'>" + "".join(
            _figure(_img(gdir / meta["image"], 192), f"{html.escape(METHODS[method].label)}, {caption}")
            for _, method, meta, gdir, caption in chosen) + "</div>"
    return "".join(gen), out


def _toy_table(rows: list[tuple[str, str, dict]]) -> str:
    """Success rates of the toy world's checker (both subjects, each itself, nothing else) per method."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(METHODS[m].label)}</td><td>{html.escape(p)}</td>"
        f"<td><b>{t['successes']}/{t['n']}</b> ({t['success_rate']:.0%})</td>"
        f"<td>{t['interval95'][0]:.0%}–{t['interval95'][1]:.0%}</td>"
        f"<td>{', '.join(f'{v} {n}' for v, n in t['verdicts'].items() if v != 'correct') or 'none'}</td></tr>"
        for m, p, t in rows)
    return ("<p>The toy world's checker reads every image: a success has exactly the two subjects, each with its "
            "own shape and colours (docs/toyworld.md). <i>missing</i> is mostly two objects fused into one, "
            "<i>blend</i> a subject carrying the other's colour (identity mixing).</p>"
            "<table class='toy'><tr><th>method</th><th>prompt</th><th>success</th><th>95% interval</th>"
            f"<th>failures</th></tr>{body}</table>")


def render(st: RunState) -> str:
    c = st.config
    gen, scores = _scores(st)
    notice = f"<div class='notice' id='notice'>{c.notice}</div>" if c.notice else "<div id='notice'></div>"
    config_text = _relative_paths(st, (st.out / RUN_FILE).read_text(encoding="utf-8", errors="replace")
                                  if (st.out / RUN_FILE).is_file() else "")
    sections = {
        "notice": notice,
        "stages": "<h2>Stages</h2>" + _stages(st),
        "descriptions": "<h2>Descriptive classes and captions</h2>" + _descriptions(st),
        "masks": "<h2>Subjects and masks</h2>" + _masks(st),
        "segmix": "<h2>Seg-Mix compositions</h2>" + _segmix(st),
        "training": "<h2>Training</h2>" + _training(st),
        "generated": "<h2>Generated images</h2>" + gen,
        "scores": "<h2>Scores</h2>" + scores,
        "config": "<h2>Config and versions</h2><pre>" + html.escape(config_text) + "</pre><pre>"
                  + html.escape(yaml.safe_dump(collect(), sort_keys=False)) + "</pre>",
    }
    body = "".join(f"<section id='{k}'>{sections[k]}</section>" for k in SECTIONS)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mudi run — {html.escape(st.out.name)}"
            f"</title><style>{CSS}</style></head><body><h1>mudi run</h1><p>{html.escape(st.out.name)}: "
            f"{', '.join(html.escape(Path(p).name) for p in st.subject_paths())}; backbone {html.escape(c.backbone)}"
            f"</p>{body}</body></html>")


def _relative_paths(st: RunState, text: str) -> str:
    """``text`` with the absolute paths of this machine written relative to the run folder (a report is shared;
    the folders of the machine that made it are nobody's business)."""
    out = str(st.out.resolve())
    prefixes = sorted({out, *(str(Path(p).resolve().parent) for p in st.config.subjects)}, key=len, reverse=True)
    for prefix in prefixes:
        rel = os.path.relpath(prefix, out)
        text = text.replace(prefix + os.sep, ("" if rel == "." else rel + os.sep)).replace(prefix, rel)
    return text


def write_report(st: RunState) -> Path:
    """``report.html``; names that are not valid UTF-8 (a photo named with Latin-1 bytes) are shown with U+FFFD."""
    path = st.out / REPORT_FILE
    text = render(st).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    write_bytes_atomic(path, text.encode("utf-8"))
    return path


def report_sections(text: str) -> list[str]:
    """The section ids found in a report (for tests and the UI)."""
    return [k for k in SECTIONS if f"<section id='{k}'>" in text]


