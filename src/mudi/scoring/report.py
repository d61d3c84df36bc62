"""The HTML report of ``mudi evaluate``: one self-contained file (thumbnails embedded as JPEG data URIs).

Images are sorted by their D&C score, best first, with the detected boxes drawn, ``S_GT`` and each image's
matched ``S_DC`` as small heat maps (rows: detections matched to subjects, columns: subjects) and the
failures flagged: *count* (detections ≠ subjects), *duplicate* (two detections resemble the same subject),
*mixed* (a detection resembles another subject more than the references resemble each other).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.visualize import numbered_boxes_thumbnail

FAILURE_TEXT = {"count": "count error", "duplicate": "duplicated subject", "mixed": "identity mixed"}


def thumbnail_data_uri(rgb: np.ndarray, detections: Sequence[Any] = (), max_side: int = 320,
                       quality: int = 82) -> str:
    """A JPEG data URI of ``rgb`` (``(H, W, 3)`` uint8) downscaled to ``max_side``, boxes drawn and numbered
    in detection order (:func:`mudi.visualize.numbered_boxes_thumbnail`)."""
    buf = io.BytesIO()
    numbered_boxes_thumbnail(rgb, detections, max_side).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell_color(v: float) -> str:
    """White (0) → deep blue (1) for similarities; values outside [0, 1] are clamped."""
    t = float(np.clip(v, 0.0, 1.0))
    r, g, b = (round(255 + (c - 255) * t) for c in (33, 102, 172))
    return f"rgb({r},{g},{b})"


def heatmap_html(matrix: Any, row_labels: Sequence[str], col_labels: Sequence[str], title: str = "") -> str:
    """A matrix as a small coloured table (values printed in each cell)."""
    if matrix is None:
        return ""
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0:
        return f'<div class="hm-empty">{html.escape(title)}: nothing detected</div>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in col_labels)
    body = []
    for i, row in enumerate(m):
        label = html.escape(row_labels[i] if i < len(row_labels) else str(i))
        cells = "".join(f'<td style="background:{_cell_color(v)};color:{"#fff" if v > 0.55 else "#222"}">'
                        f"{v:.2f}</td>" for v in row)
        body.append(f"<tr><th>{label}</th>{cells}</tr>")
    cap = f"<caption>{html.escape(title)}</caption>" if title else ""
    return f'<table class="hm">{cap}<tr><th></th>{head}</tr>{"".join(body)}</table>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;background:#f6f7f9;color:#222}
h1{font-size:22px;margin:0 0 4px} .sub{color:#666;margin-bottom:16px}
.summary{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start;background:#fff;padding:16px;
 border-radius:8px;box-shadow:0 1px 3px #0002;margin-bottom:20px}
.stat{font-size:13px;color:#555} .stat b{display:block;font-size:22px;color:#111}
.refs img{height:64px;border-radius:4px;margin-right:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:10px;border-top:5px solid #3cb44b}
.card.fail{border-top-color:#e6194b} .card img{width:100%;border-radius:4px}
.name{font-size:12px;color:#666;word-break:break-all} .prompt{font-size:12px;color:#444;margin:4px 0}
.scores span{display:inline-block;background:#eef;border-radius:4px;padding:2px 6px;margin:2px;font-size:13px}
.flag{display:inline-block;background:#e6194b;color:#fff;border-radius:4px;padding:2px 6px;margin:2px;font-size:12px}
.hms{display:flex;gap:10px;flex-wrap:wrap;margin-top:6px}
table.hm{border-collapse:collapse;font-size:11px} table.hm caption{font-size:11px;color:#666;text-align:left}
table.hm td{width:34px;height:22px;text-align:center} table.hm th{font-weight:normal;color:#666;padding:0 3px}
.hm-empty{font-size:12px;color:#999}
"""


def _subject_labels(subjects: Sequence[Any]) -> list[str]:
    return [getattr(s, "name", str(s)) for s in subjects]


def render_report(cards: Sequence[dict[str, Any]], summary: dict[str, Any], subjects: Sequence[Any],
                  reference_thumbs: Sequence[str] = ()) -> str:
    """The whole report as one HTML string.

    ``cards``: per image ``{"name", "thumb" (data URI), "record"}`` where ``record`` is the per-image JSON
    (``metrics[m]["score" | "s_dc" | "s_dc_matched" | "failures"]``, ``text``, ``prompts``, ``detections``).
    ``summary``: ``means``, ``failure_counts``, ``s_gt``, ``num_images``.
    """
    labels = _subject_labels(subjects)
    metrics = list(summary.get("s_gt", {}))
    primary = metrics[0] if metrics else None

    def sort_key(c: dict[str, Any]) -> float:
        return -c["record"]["metrics"][primary]["score"] if primary else 0.0

    means = "".join(f'<div class="stat">{html.escape(m)}<b>{v:.3f}</b></div>' for m, v in summary["means"].items())
    fails = "".join(f'<div class="stat">{html.escape(FAILURE_TEXT.get(f, f))}<b>{n}</b></div>'
                    for f, n in summary.get("failure_counts", {}).items())
    gts = "".join(heatmap_html(summary["s_gt"][m], labels, labels, f"S_GT ({m})") for m in metrics)
    refs = "".join(f'<img src="{u}" alt="reference">' for u in reference_thumbs)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mudi evaluate</title><style>{_CSS}</style>"
             "</head><body>",
             f"<h1>Detect-and-Compare report</h1><div class='sub'>{summary['num_images']} images · subjects: "
             f"{html.escape(', '.join(labels))} · sorted by {html.escape(primary or '')}, best first</div>",
             f"<div class='summary'><div class='stat'>images<b>{summary['num_images']}</b></div>{means}{fails}"
             f"<div class='hms'>{gts}</div>{('<div class=refs>' + refs + '</div>') if refs else ''}</div>",
             "<div class='grid'>"]
    for c in sorted(cards, key=sort_key):
        rec = c["record"]
        failures = rec.get("failures", [])
        scores = "".join(f"<span>{html.escape(m)} <b>{v['score']:.3f}</b></span>" for m, v in rec["metrics"].items())
        scores += "".join(f"<span>{html.escape(m)} <b>{v:.3f}</b></span>" for m, v in rec.get("text", {}).items())
        flags = "".join(f"<span class='flag'>{html.escape(FAILURE_TEXT.get(f, f))}</span>" for f in failures)
        if "count" in failures:
            flags = flags.replace(FAILURE_TEXT["count"],
                                  f"count error: {len(rec['detections'])} found, {len(labels)} expected")
        hms = []
        for m, v in rec["metrics"].items():
            if v.get("s_dc_matched") is not None:
                rows = [f"#{k}" for k in v["assignment"]]
                hms.append(heatmap_html(v["s_dc_matched"], rows, labels, f"S_DC ({m})"))
            else:
                rows = [f"#{k}" for k in range(len(rec["detections"]))]
                hms.append(heatmap_html(v["s_dc"], rows, labels, f"S_DC ({m}, unmatched)"))
        prompt = rec.get("prompts", [""])[0] if rec.get("prompts") else ""
        parts.append(f"<div class='card{' fail' if failures else ''}'><img src='{c['thumb']}' alt=''>"
                     f"<div class='name'>{html.escape(c['name'])}</div>"
                     f"<div class='prompt'>{html.escape(prompt)}</div><div class='scores'>{scores}</div>"
                     f"<div>{flags}</div><div class='hms'>{''.join(hms)}</div></div>")
    parts.append("</div></body></html>")
    return "\n".join(parts)
