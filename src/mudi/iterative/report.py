"""The report of ``mudi iterate``: ``report.json`` (every round's statistics, histogram and kept images),
per-round histogram PNGs (``round-r/histogram.png``), ``progress.png`` (mean and median by round) and
``report.html`` (one self-contained file: the charts and the kept images as thumbnails, each with its score)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image

from mudi.config import to_dict
from mudi.data.images import read_image
from mudi.io import save_image_atomic, write_json_atomic, write_text_atomic
from mudi.scoring.report import thumbnail_data_uri
from mudi.visualize import histogram_chart, line_chart

_CSS = """body{font-family:system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px} table{border-collapse:collapse;background:#fff}
td,th{padding:4px 10px;border:1px solid #ddd;text-align:right} .kept{display:flex;flex-wrap:wrap;gap:8px}
.card{background:#fff;padding:4px;border:1px solid #ddd;width:170px;font-size:11px} .card img{width:170px}"""


def _png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def write_report(out: Path, config: Any, rounds: list[dict], final: dict | None, subjects: list[str]) -> Path:
    """Write the report files into ``out``; returns the path of ``report.html``."""
    stages = [(f"round {r['round']}", r, Path(r["folder"])) for r in rounds]
    if final is not None:
        stages.append(("final", final, Path(final["folder"])))
    charts = {}
    for label, entry, folder in stages:
        stats = entry.get("stats") or {}
        hist = stats.get("histogram")
        if not hist:
            continue
        cutoff = min((k["score"] for k in entry.get("kept", [])), default=None)
        img = histogram_chart(hist["counts"], hist["edges"], f"{label}: {entry.get('metric') or 'score'} of "
                              f"{stats.get('num_images', 0)} images (mean {_fmt(stats.get('mean'))})", cutoff,
                              "kept >= here" if cutoff is not None else "")
        save_image_atomic(folder / "histogram.png", img)
        entry["histogram_png"] = str(folder / "histogram.png")
        charts[label] = img
    labels = [label for label, _, _ in stages]
    progress = line_chart({"mean": [e.get("stats", {}).get("mean") for _, e, _ in stages],
                           "median": [e.get("stats", {}).get("median") for _, e, _ in stages]}, labels,
                          "D&C by round (round r scores the model it starts from)") if stages else None
    if progress is not None:
        save_image_atomic(out / "progress.png", progress)
    write_json_atomic(out / "report.json", {"subjects": subjects, "rounds": rounds, "final": final,
                                            "config": to_dict(config)})
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(label)}</td><td>{_fmt(e.get('stats', {}).get('mean'))}"
                   f"</td><td>{_fmt(e.get('stats', {}).get('median'))}</td><td>{e.get('stats', {}).get('num_images', 0)}"
                   f"</td><td>{len(e.get('kept', []))}</td><td style='text-align:left'>{html.escape(str(e.get('model')))}"
                   "</td></tr>" for label, e, _ in stages)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mudi iterate</title><style>{_CSS}</style>"
             f"</head><body><h1>mudi iterate: {html.escape(', '.join(subjects))}</h1>"
             "<p>Round r generates with the model it starts from (round 1: the given LoRA), scores the images, keeps "
             "the best and fine-tunes on them; <i>final</i> is the last model on round 1's prompts and seeds.</p>"
             "<table><tr><th>stage</th><th>mean</th><th>median</th><th>images</th><th>kept</th><th>model</th></tr>"
             f"{rows}</table>"]
    if progress is not None:
        parts.append(f"<p><img src='{_png_uri(progress)}'></p>")
    for label, entry, folder in stages:
        parts.append(f"<h2>{html.escape(label)}</h2>")
        if label in charts:
            parts.append(f"<img src='{_png_uri(charts[label])}'>")
        cards = []
        for k in entry.get("kept", []):
            rgb = read_image(folder / k["image"])[0]
            cards.append(f"<div class='card'><img src='{thumbnail_data_uri(rgb, max_side=170)}'><br>#{k['rank']} · "
                         f"{k['score']:.3f}<br>{html.escape(k['prompt'])}</div>")
        if cards:
            parts.append(f"<p>kept ({len(cards)}):</p><div class='kept'>{''.join(cards)}</div>")
    parts.append("</body></html>")
    path = out / "report.html"
    write_text_atomic(path, "\n".join(parts))
    return path
