"""The Subjects, Masks and Seg-Mix tabs (gradio). Work runs in the worker; every view is read back from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from mudi.compositions import SegmixConfig, write_compositions
from mudi.data.subjects import find_subjects
from mudi.segmentation.folder import format_summary
from mudi.ui import subjects as ops
from mudi.ui.context import UiContext, wait_for
from mudi.ui.toy import add_toy_subjects, toy_set_choices

BACKENDS = ["grabcut", "owlv2+sam", "owlv2+grabcut", "tiny-owlv2+tiny-sam"]


def subject_choices(ctx: UiContext) -> list[tuple[str, str]]:
    return [(ops.subject_label(s), Path(s.root).name) for s in ops.load_workspace_subjects(ctx.ws)]


def picker_update(ctx: UiContext, ticked: list[str]) -> Any:
    choices = subject_choices(ctx)
    names = {v for _, v in choices}
    return gr.CheckboxGroup(choices=choices, value=[t for t in ticked if t in names])


def photos_gallery(ctx: UiContext, ticked: list[str]) -> list[tuple[str, str]]:
    out = []
    for folder in ctx.subject_dirs(ticked):
        for s in find_subjects(folder):
            out.extend((str(im.path), f"{s.name}/{im.path.name}") for im in s.images)
    return out


# ------------------------------------------------------------------------------------------------ Subjects
def build_subjects_tab(ctx: UiContext, picker: gr.CheckboxGroup, tab: gr.Tab) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("**New subject from photos** — 3–5 photos of one subject, a rare identifier word and its "
                        "class. Tick the subjects to work on at the top; their order is [V1], [V2], …")
            photos = gr.File(label="Photos", file_count="multiple", file_types=["image"], elem_id="photos",
                             height=200)
            with gr.Row():
                identifier = gr.Textbox(label="Identifier (a rare word)", placeholder="olis", elem_id="identifier")
                class_noun = gr.Textbox(label="Class noun", placeholder="dog", elem_id="class-noun")
                descriptive = gr.Textbox(label="Descriptive class (optional)", placeholder="corgi",
                                         elem_id="descriptive-class")
            with gr.Row():
                create = gr.Button("Create subject", variant="primary", elem_id="create-subject")
                samples = gr.Button("Add the bundled sample subjects", elem_id="add-samples")
            with gr.Row():
                sets = toy_set_choices()
                toy_set = gr.Dropdown(sets, value=sets[0][1], label="Toy subjects (for the toyworld model)",
                                      elem_id="toy-set", scale=3)
                toys = gr.Button("Add and tick the toy subjects", elem_id="add-toy-subjects", scale=1)
            status = gr.Markdown(elem_id="subjects-status")
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Photos of the ticked subjects", columns=4, height=420,
                                 elem_id="subject-gallery", fit_columns=False)

    def on_create(files, ident, noun, desc, ticked):
        try:
            s = ops.create_subject(ctx.ws, [f if isinstance(f, str) else f.name for f in (files or [])], ident,
                                   noun, desc)
        except Exception as e:  # a MudiError or a file problem: shown, the form kept
            return f"**Error:** {ctx.error_text(e)}", gr.skip(), gr.skip(), gr.skip()
        ticked = [*ticked, Path(s.root).name]
        return (f"created **{s.name}** ({s.phrase}, {len(s.images)} photos) in `{s.root}`",
                picker_update(ctx, ticked), None, photos_gallery(ctx, ticked))

    def on_samples(ticked):
        added = ops.add_sample_subjects(ctx.ws)
        msg = (f"added {', '.join(p.name for p in added)} (with their masks)" if added
               else "the sample subjects are already in the workspace")
        return msg, picker_update(ctx, ticked), photos_gallery(ctx, ticked)

    def on_toys(set_name, ticked):
        try:
            folders, added = add_toy_subjects(ctx.ws, set_name)
        except Exception as e:  # a MudiError or a file problem: shown
            return f"**Error:** {ctx.error_text(e)}", gr.skip(), gr.skip()
        ticked = [p.name for p in folders]
        msg = (f"added {', '.join(p.name for p in added)} (toy renders with exact masks)" if added
               else "these toy subjects are already in the workspace")
        return (f"{msg}; ticked {', '.join(ticked)}: train them with the backbone toyworld (Train tab).",
                picker_update(ctx, ticked), photos_gallery(ctx, ticked))

    create.click(on_create, [photos, identifier, class_noun, descriptive, picker], [status, picker, photos, gallery])
    samples.click(on_samples, [picker], [status, picker, gallery])
    toys.click(on_toys, [toy_set, picker], [status, picker, gallery])
    picker.change(lambda t: photos_gallery(ctx, t), [picker], [gallery], show_progress="hidden")
    tab.select(lambda t: photos_gallery(ctx, t), [picker], [gallery], show_progress="hidden")


# ------------------------------------------------------------------------------------------------ Masks
def _mask_view(row, pts) -> tuple:
    """The review image of ``row`` (its mask, the box corners clicked so far) and its caption."""
    if row is None:
        return None, "Pick a photo above."
    img, _ = ops.editor_view(row, pts)
    return img, f"**{row.subject}/{row.image}** — {row.caption.split(' · ', 1)[1]}"


def _accept(row, pts, name) -> str:
    ops.accept_mask(row)
    return f"{row.subject}/{row.image}"


def _reject(row, pts, name) -> str:
    ops.reject_mask(row)
    return f"{row.subject}/{row.image} has no mask now; draw a box and re-segment it, or remove the photo"


def _remove(row, pts, name) -> str:
    return f"moved to {ops.remove_photo(row)}"


def build_masks_tab(ctx: UiContext, picker: gr.CheckboxGroup, tab: gr.Tab) -> None:
    backends = list(dict.fromkeys([ctx.config.backend, *BACKENDS]))
    with gr.Row():
        backend = gr.Dropdown(backends, value=ctx.config.backend, label="Segmentation backend", elem_id="backend")
        overwrite = gr.Checkbox(label="redo photos that already have a mask", value=False)
        segment = gr.Button("Segment the ticked subjects", variant="primary", elem_id="segment")
    status = gr.Markdown(elem_id="masks-status")
    gallery = gr.Gallery(label="Masks (green = subject; click one to review it)", columns=6, height=360,
                         elem_id="mask-gallery", allow_preview=False, fit_columns=False)
    rows_state = gr.State([])
    selected = gr.State(None)
    corners = gr.State([])
    with gr.Row():
        editor = gr.Image(label="Review: click two corners to draw a box, then re-segment", type="pil",
                          interactive=False, elem_id="mask-editor", height=420, format="png", buttons=[])
        with gr.Column():
            picked = gr.Markdown("Pick a photo above.", elem_id="mask-picked")
            accept = gr.Button("Accept the mask", elem_id="mask-accept")
            reject = gr.Button("Reject (delete the mask)", elem_id="mask-reject")
            reseg = gr.Button("Re-segment inside the box", elem_id="mask-resegment")
            clear = gr.Button("Clear the box")
            remove = gr.Button("Remove this photo from the subject", variant="stop")

    def refresh(ticked):
        rows = ops.photo_rows(ctx.subject_dirs(ticked))
        return [(ops.mask_preview(r), r.caption) for r in rows], rows

    def on_segment(ticked, name, redo):
        task = ctx.worker.submit("segmentation", ops.segment, ctx.subject_dirs(ticked), name, ctx.config.device, redo)
        yield from wait_for(task, 4)
        if task.state == "failed":
            yield f"**Error:** {task.error}", gr.skip(), gr.skip(), gr.skip()
            return
        counts = ", ".join(f"{k} {v}" for k, v in task.result.counts().items() if v)
        gal, rows = refresh(ticked)
        yield (f"segmented in {task.elapsed():.0f} s: {counts}\n\n```\n{format_summary(task.result)}\n```",
               gal, rows, picker_update(ctx, ticked))

    def on_pick(rows, evt: gr.SelectData):
        row = rows[evt.index] if rows and evt.index is not None and evt.index < len(rows) else None
        return (row, [], *_mask_view(row, []))

    def on_click(row, pts, evt: gr.SelectData):
        if row is None or evt.index is None:
            return gr.skip(), gr.skip(), gr.skip()
        pts = [*pts, tuple(evt.index)] if len(pts) < 2 else [tuple(evt.index)]
        return (pts, *_mask_view(row, pts))

    def act(fn, done_text):
        def handler(ticked, row, pts, name):
            if row is None:
                return ("**Error:** pick a photo first", *[gr.skip()] * 7)
            task = ctx.worker.submit(done_text, fn, row, pts, name)
            task.wait()
            if task.state == "failed":
                return (f"**Error:** {task.error}", *[gr.skip()] * 7)
            gal, rows = refresh(ticked)
            row = next((r for r in rows if r.subject_root == row.subject_root and r.image == row.image), None)
            return (f"{done_text}: {task.result or ''}", gal, rows, row, [], *_mask_view(row, []),
                    picker_update(ctx, ticked))
        return handler

    def do_reseg(row, pts, name):
        box = ops.resegment_in_view(row, pts, name, ctx.config.device)
        return f"{row.subject}/{row.image} in the box {[round(v) for v in box]} ({name})"

    outs = [status, gallery, rows_state, selected, corners, editor, picked, picker]
    segment.click(on_segment, [picker, backend, overwrite], [status, gallery, rows_state, picker])
    gallery.select(on_pick, [rows_state], [selected, corners, editor, picked])
    editor.select(on_click, [selected, corners], [corners, editor, picked])
    clear.click(lambda row: ([], *_mask_view(row, [])), [selected], [corners, editor, picked])
    for button, fn, text in ((accept, _accept, "accepted"), (reject, _reject, "rejected"),
                             (reseg, do_reseg, "re-segmented"), (remove, _remove, "removed")):
        button.click(act(fn, text), [picker, selected, corners, backend], outs)
    picker.change(refresh, [picker], [gallery, rows_state], show_progress="hidden")
    tab.select(refresh, [picker], [gallery, rows_state], show_progress="hidden")


# ------------------------------------------------------------------------------------------------ Seg-Mix
def build_segmix_tab(ctx: UiContext, picker: gr.CheckboxGroup, tab: gr.Tab) -> None:
    gr.Markdown("Seg-Mix compositions of the ticked subjects, as training will make them (docs/segmix.md): "
                "each subject's cut-out on a plain background, captioned with both identifiers.")
    with gr.Row():
        num = gr.Number(label="Compositions", value=8, precision=0, minimum=1, maximum=64, elem_id="segmix-num")
        seed = gr.Number(label="Seed", value=0, precision=0)
        size = gr.Dropdown([256, 512, 1024], value=512, label="Canvas (px)")
        mode = gr.Radio(["segmix", "cutmix"], value="segmix", label="Mode")
        go = gr.Button("Preview compositions", variant="primary", elem_id="segmix-preview")
    status = gr.Markdown(elem_id="segmix-status")
    gallery = gr.Gallery(label="Compositions", columns=4, height=520, elem_id="segmix-gallery",
                         fit_columns=False, object_fit="contain")

    def run(ticked, n, s, px, m):
        dirs = ctx.subject_dirs(ticked)
        config = SegmixConfig(subjects=[str(p) for p in dirs], output_dir=str(ctx.ws.segmix_dir),
                              num_images=int(n or 8), resolution=int(px), seed=int(s or 0), mode=m)
        return write_compositions(config)

    def on_preview(ticked, n, s, px, m):
        task = ctx.worker.submit("Seg-Mix preview", run, ticked, n, s, px, m)
        yield from wait_for(task, 2)
        if task.state == "failed":
            yield f"**Error:** {task.error}", gr.skip()
            return
        out = ctx.ws.segmix_dir
        yield (f"{len(task.result)} compositions in `{out}` (contact sheet: `{out / 'grid.png'}`)",
               [(str(out / r["image"]), r["prompt"]) for r in task.result])

    go.click(on_preview, [picker, num, seed, size, mode], [status, gallery])
