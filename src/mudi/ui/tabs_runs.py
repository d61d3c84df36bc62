"""The Train and Generate tabs (gradio). Training runs are `mudi train` subprocesses watched through their run
folders; generation and scoring run in the worker."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from mudi.adapters import registry
from mudi.core.init_latents import default_gamma
from mudi.errors import MudiError
from mudi.ui import generation as gen
from mudi.ui.config import TOY_CHOICE
from mudi.ui.context import UiContext, wait_for
from mudi.ui.jobs import log_tail, resume_command
from mudi.ui.layouts import CANVAS_SIDE, box_from_clicks, draw_layout, layout_data
from mudi.ui.toy import is_toy_model, read_verdicts, toy_recipe, toy_summary_table, verdict_counts_text
from mudi.ui.training import (
    TRAINS_CHOICES,
    build_request,
    form_defaults,
    new_run_dir,
    trains_learning_rate,
    validation_prompt_for,
)

TINY_NOTE = ("*{backbone} is a tiny model with random weights, built in memory: the images are noise and the "
             "scores only show that everything runs. Real pictures need a real backbone (docs/install.md).*")
FORM_KEYS = ("max_train_steps", "learning_rate", "rank", "composition", "composition_prob", "trains",
             "checkpointing_steps", "save_steps", "validation_steps")


def run_names(ctx: UiContext) -> list[str]:
    return [p.name for p in ctx.ws.run_dirs()]


def _loss_frame(metrics: list[dict]) -> pd.DataFrame:
    rows = [(int(m["step"]), float(m["loss"])) for m in metrics if "step" in m and m.get("loss") is not None]
    return pd.DataFrame(rows, columns=["step", "loss"])


# ------------------------------------------------------------------------------------------------ Train
def _train_form(ctx: UiContext, d: dict) -> SimpleNamespace:
    """The left column of the Train tab: a new run's name, backbone and recipe, and its Start button."""
    gr.Markdown("**New run** on the ticked subjects: a `mudi train` process of its own. Closing the page "
                "or the UI does not stop it; its folder is an ordinary run folder.")
    name = gr.Textbox(label="Run name (optional)", placeholder="olis-ult", elem_id="run-name")
    choices = [(f"{TOY_CHOICE} (mudi's toy model: CPU, 32 px shapes)", TOY_CHOICE), *registry.names("backbone")]
    backbone = gr.Dropdown(choices, value=ctx.config.backbone, label="Backbone", elem_id="train-backbone")
    with gr.Row():
        steps = gr.Number(label="Steps", value=d["max_train_steps"], precision=0, minimum=1,
                          elem_id="train-steps")
        lr = gr.Number(label="Learning rate", value=d["learning_rate"])
        rank = gr.Number(label="LoRA rank", value=d["rank"], precision=0, minimum=1)
    composition = gr.Radio(["segmix", "cutmix", "none"], value=d["composition"], label="Composition")
    prob = gr.Slider(0, 1, value=d["composition_prob"], step=0.05, label="Composition probability")
    trains = gr.Radio(TRAINS_CHOICES, value="lora", label="What trains", elem_id="train-trains")
    with gr.Row():
        ckpt = gr.Number(label="Checkpoint every", value=d["checkpointing_steps"], precision=0, minimum=1)
        snaps = gr.Number(label="Snapshot every (0 = off)", value=d["save_steps"], precision=0, minimum=0)
        val_steps = gr.Number(label="Validation every (0 = off)", value=d["validation_steps"], precision=0,
                              minimum=0, elem_id="val-steps")
    val_prompt = gr.Textbox(label="Validation prompt", value=validation_prompt_for(ctx.config.backbone))
    extra = gr.Textbox(label="More options (key=value, as `mudi train --set`)", lines=2,
                       placeholder="class_data_dir=priors/olis_ult\nwith_prior_preservation=true")
    start = gr.Button("Start training", variant="primary", elem_id="train-start")
    return SimpleNamespace(name=name, backbone=backbone, steps=steps, lr=lr, rank=rank, composition=composition,
                           prob=prob, trains=trains, ckpt=ckpt, snaps=snaps, val_steps=val_steps, val_prompt=val_prompt, extra=extra,
                           start=start)


def _train_monitor(names: list[str]) -> SimpleNamespace:
    """The right column of the Train tab: the run picker, Stop / Resume, status, loss curve, validation, log."""
    with gr.Row():
        run = gr.Dropdown(names, value=names[0] if names else None, label="Run", elem_id="run-select",
                          scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop", scale=1)
        resume = gr.Button("Resume", elem_id="train-resume", scale=1)
        until = gr.Number(label="Resume until step", value=None, precision=0, scale=1)
    status = gr.Markdown(elem_id="train-status")
    plot = gr.LinePlot(_loss_frame([]), x="step", y="loss", label="Loss", height=220, elem_id="loss-plot")
    val = gr.Gallery(label="Validation images (newest first)", columns=6, height=200,
                     elem_id="validation-gallery", fit_columns=False)
    logbox = gr.Textbox(label="train.log", lines=8, max_lines=8, interactive=False, elem_id="train-log")
    return SimpleNamespace(run=run, stop=stop, resume=resume, until=until, status=status, plot=plot, val=val,
                           logbox=logbox)


def build_train_tab(ctx: UiContext, picker: gr.CheckboxGroup, tab: gr.Tab) -> None:
    d = form_defaults(ctx.config.backbone)
    names = run_names(ctx)
    with gr.Row():
        with gr.Column(scale=1):
            f = _train_form(ctx, d)
        with gr.Column(scale=2):
            m = _train_monitor(names)
    name, backbone, steps, lr, rank, composition, prob, ckpt, snaps, val_steps, val_prompt, extra, start = (
        f.name, f.backbone, f.steps, f.lr, f.rank, f.composition, f.prob, f.ckpt, f.snaps, f.val_steps, f.val_prompt,
        f.extra, f.start)
    run, stop, resume, until, status, plot, val, logbox = (m.run, m.stop, m.resume, m.until, m.status, m.plot,
                                                            m.val, m.logbox)
    seen = gr.State(None)
    timer = gr.Timer(2.0)

    def view(run_name, last):
        if not run_name:
            return "No run yet: tick two subjects and start one.", gr.skip(), gr.skip(), gr.skip(), last
        folder = ctx.ws.run_dir(run_name)
        st = ctx.runs.status(folder)
        images = sorted((folder / "validation").glob("*.png"), reverse=True)
        text = (f"**{run_name}** — {st.summary()}\n\nFolder `{folder}`; from a terminal: "
                f"`{resume_command(folder)}`")
        sig = (run_name, st.state, st.step, len(images), (folder / "train.log").stat().st_size
               if (folder / "train.log").is_file() else 0)
        if sig == last:
            return text, gr.skip(), gr.skip(), gr.skip(), last
        return (text, _loss_frame(st.metrics), [(str(p), p.stem) for p in images[:24]], log_tail(folder), sig)

    def on_start(ticked, run_name, bb, *values):
        form = dict(zip(FORM_KEYS, values[:len(FORM_KEYS)]))
        prompt, more = values[len(FORM_KEYS):]
        dirs = ctx.subject_dirs(ticked)
        try:
            request = build_request(dirs, bb, form, more, ctx.config.device, prompt, ws=ctx.ws)
            folder = new_run_dir(ctx.ws, run_name, dirs)
            ctx.runs.start(folder, request)
        except MudiError as e:
            return f"**Error:** {e}", gr.skip()
        return f"started **{folder.name}**", gr.Dropdown(choices=run_names(ctx), value=folder.name)

    def on_stop(run_name):
        try:
            return f"{ctx.runs.stop(ctx.ws.run_dir(run_name)).message}"
        except MudiError as e:
            return f"**Error:** {e}"

    def on_resume(run_name, until_step):
        try:
            ctx.runs.resume(ctx.ws.run_dir(run_name), int(until_step) if until_step else None)
        except MudiError as e:
            return f"**Error:** {e}"
        return f"resumed **{run_name}** from its latest checkpoint"

    def on_backbone(bb):
        v = form_defaults(bb)
        return [v[k] for k in ("max_train_steps", "learning_rate", "rank", "checkpointing_steps", "save_steps",
                               "validation_steps")] + [validation_prompt_for(bb)]

    form_inputs = [steps, lr, rank, composition, prob, f.trains, ckpt, snaps, val_steps, val_prompt, extra]
    f.trains.change(lambda kind, bb: trains_learning_rate(kind, form_defaults(bb)["learning_rate"]),
                    [f.trains, backbone], [lr])
    start.click(on_start, [picker, name, backbone, *form_inputs], [status, run])
    stop.click(on_stop, [run], [status])
    resume.click(on_resume, [run, until], [status])
    backbone.change(on_backbone, [backbone], [steps, lr, rank, ckpt, snaps, val_steps, val_prompt])
    outs = [status, plot, val, logbox, seen]
    timer.tick(view, [run, seen], outs, show_progress="hidden")
    run.change(view, [run, gr.State(None)], outs, show_progress="hidden")
    tab.select(lambda r: gr.Dropdown(choices=run_names(ctx), value=r if r in run_names(ctx) else None), [run], [run],
               show_progress="hidden")


# ------------------------------------------------------------------------------------------------ Generate
DEFAULT_PROMPT = "A photo of [V1] and [V2]."


def _is_toy_lora(folder: str | None) -> bool:
    try:
        return bool(folder) and is_toy_model(gen.lora_info(folder).pretrained_model_name_or_path)
    except MudiError:
        return False


def _prompt_for(folder: str | None, current: str | None) -> str | None:
    """The prompt for a newly picked LoRA: the toy model's words for a toy LoRA (if the prompt is still the
    default), the default again when leaving one; None keeps the prompt as it is."""
    toy = toy_recipe().prompt
    if _is_toy_lora(folder):
        return toy if (current or "").strip() in ("", DEFAULT_PROMPT) else None
    return DEFAULT_PROMPT if current == toy else None


def _toy_table(ctx: UiContext, **kwargs) -> gr.Dataframe:
    """The toy world's checker per toy generation (hidden until there is one): the methods side by side."""
    headers, rows = toy_summary_table(ctx.ws)
    return gr.Dataframe(pd.DataFrame(rows, columns=headers), visible=bool(rows), **kwargs)


def _generated_text(out, task, backbone: str) -> str:
    """The status line after a generation: where it is, how long it took, and what the toy checker says."""
    note = "\n\n" + TINY_NOTE.format(backbone=backbone) if gen.is_tiny(backbone) else ""
    verdicts = read_verdicts(out / gen.EVALUATION_DIR)
    if verdicts:
        note = f"\n\n**Toy-world checker: {verdict_counts_text(verdicts)}** (the verdict is under each image)" + note
    return (f"{len(gen.generated_rows(out))} image(s) in `{out}` in {task.elapsed():.0f} s "
            f"(report: `{out / gen.EVALUATION_DIR / 'report.html'}`){note}")


def _results_panel(ctx: UiContext) -> SimpleNamespace:
    """Below the Generate form: the status, the images, their scores, the toy summary and earlier generations."""
    status = gr.Markdown(elem_id="generate-status")
    gallery = gr.Gallery(label="Images (seed and scores under each; the toy checker's verdict first)", columns=4,
                         height=380, elem_id="generated-gallery", fit_columns=False)
    table = gr.Dataframe(label="Scores per image", interactive=False, elem_id="scores")
    toy = _toy_table(ctx, label="Toy-world checker per generation (method: the run's composition and the γ used)",
                     interactive=False, elem_id="toy-summary")
    earlier = gr.Dropdown([p.name for p in ctx.ws.generation_dirs()], value=None, label="Earlier generations",
                          elem_id="earlier")
    return SimpleNamespace(status=status, gallery=gallery, table=table, toy=toy, earlier=earlier)


def _labels(folder: str | None) -> list[str]:
    try:
        return gen.lora_info(folder).labels if folder else []
    except MudiError:
        return []


def _generate_form(loras: list, first: str | None) -> SimpleNamespace:
    """The left column of the Generate tab: the LoRA, prompt, γ, seeds, steps, layout mode and the button."""
    lora = gr.Dropdown(loras, value=first, elem_id="lora-select",
                       label="LoRA (a finished run, or one of its snapshots)")
    prompt = gr.Textbox(label="Prompt ([V1], [V2] = the subjects)", value=_prompt_for(first, DEFAULT_PROMPT),
                        elem_id="prompt")
    gamma = gr.Slider(0, 5, value=default_gamma(2), step=0.25,
                      label="γ — init strength (0 = the plain pipeline; the paper: 1 for two subjects)",
                      elem_id="gamma")
    with gr.Row():
        seed = gr.Number(label="First seed", value=0, precision=0, elem_id="seed")
        num = gr.Number(label="Images", value=4, precision=0, minimum=1, maximum=64, elem_id="num-images")
        steps = gr.Number(label="Sampler steps (empty: the model's)", value=None, precision=0,
                          elem_id="gen-steps")
    mode = gr.Radio(["random", "boxes", "relative sizes"], value="random", label="Layout of the init",
                    elem_id="layout-mode")
    sizes = gr.Textbox(label="Relative sizes, one per subject (e.g. 1,2)", elem_id="relative-sizes")
    regions = gr.Checkbox(label="Region control: each subject's prompt only in its box of the layout (Mix-of-Show; "
                          "DB+Region with γ 0)", value=False, elem_id="region-control")
    score = gr.Checkbox(label="Score each image with Detect-and-Compare", value=True)
    go = gr.Button("Generate", variant="primary", elem_id="generate")
    return SimpleNamespace(lora=lora, prompt=prompt, gamma=gamma, seed=seed, num=num, steps=steps, mode=mode,
                           sizes=sizes, score=score, go=go, regions=regions)


def _layout_panel(first: str | None) -> SimpleNamespace:
    """The right column of the Generate tab: the boxes canvas (click two corners per subject) and its JSON."""
    labels = _labels(first)
    target = gr.Radio(labels, value=labels[0] if labels else None, label="Drawing the box of",
                      elem_id="box-target")
    canvas = gr.Image(draw_layout([None] * len(labels), labels), type="pil", interactive=False, elem_id="layout-canvas",
                      label="Layout: click two opposite corners for each subject's box", height=CANVAS_SIDE,
                      width=CANVAS_SIDE, format="png", buttons=[])
    clear = gr.Button("Clear the boxes")
    layout_json = gr.Code(language="json", label="Layout file (mudi generate --layout)", interactive=False,
                          elem_id="layout-json")
    return SimpleNamespace(labels=labels, target=target, canvas=canvas, clear=clear, layout_json=layout_json)


def _layout_json_text(folder: str, bx: list) -> str:
    """The layout file of the boxes drawn so far (what ``mudi generate --layout`` reads), or "" while incomplete."""
    try:
        data = layout_data(bx, gen.lora_info(folder).identifiers)
        return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data.items()) + "\n}"
    except MudiError:
        return ""


def _reset_boxes(folder: str | None) -> tuple:
    """A new LoRA (or Clear): no boxes, no pending corner, the empty canvas, the first subject ticked."""
    labels = _labels(folder)
    bx = [None] * len(labels)
    return bx, None, draw_layout(bx, labels), gr.Radio(choices=labels, value=labels[0] if labels else None), ""


def _lora_dropdown(ctx: UiContext, current: str | None) -> gr.Dropdown:
    """The LoRA choices as they are now (a run may have finished), keeping the current one if it is still there."""
    choices = gen.lora_choices(ctx.ws)
    values = [v for _, v in choices]
    return gr.Dropdown(choices=choices, value=current if current in values else (values[0] if values else None))


def build_generate_tab(ctx: UiContext, tab: gr.Tab) -> None:
    loras = gen.lora_choices(ctx.ws)
    first = loras[0][1] if loras else None
    with gr.Row():
        with gr.Column(scale=1):
            f = _generate_form(loras, first)
        with gr.Column(scale=1):
            lay = _layout_panel(first)
    lora, prompt, gamma, seed, num, steps, mode, sizes, score, go = (f.lora, f.prompt, f.gamma, f.seed, f.num, f.steps,
                                                                     f.mode, f.sizes, f.score, f.go)
    labels, target, canvas, clear, layout_json = lay.labels, lay.target, lay.canvas, lay.clear, lay.layout_json
    res = _results_panel(ctx)
    status, gallery, table, toy_table, earlier = res.status, res.gallery, res.table, res.toy, res.earlier
    boxes = gr.State([None] * len(labels))
    pending = gr.State(None)
    labels_of = _labels

    def on_canvas(folder, who, bx, first, evt: gr.SelectData):
        labels = labels_of(folder)
        if not labels or evt.index is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        bx = list(bx) if len(bx) == len(labels) else [None] * len(labels)
        xy = tuple(evt.index)
        k = labels.index(who) if who in labels else 0
        if first is None:
            return bx, xy, draw_layout(bx, labels, xy), gr.skip(), gr.skip(), gr.skip()
        bx[k] = box_from_clicks(first, xy)
        nxt = next((j for j in range(len(labels)) if bx[j] is None), k)
        return (bx, None, draw_layout(bx, labels), gr.Radio(value=labels[nxt]), _layout_json_text(folder, bx),
                "boxes" if all(b is not None for b in bx) else gr.skip())

    def show(folder_name):
        if not folder_name:
            return gr.skip(), gr.skip()
        rows = gen.generated_rows(ctx.ws.generation_dir(folder_name))
        headers, values = gen.score_table(rows)
        return [(str(r.path), r.caption) for r in rows], pd.DataFrame(values, columns=headers)

    def on_generate(folder, text, g, s, n, k, m, rel, bx, do_score, regions):
        try:
            if not folder:
                raise MudiError("no LoRA yet: train a run first (Train tab), then pick it here")
            sizes_list = [float(v) for v in rel.replace(",", " ").split()] if m == "relative sizes" else None
        except (MudiError, ValueError) as e:
            yield f"**Error:** {e}", gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        task = ctx.worker.submit("generation", gen.generate_and_score, ctx.ws, folder, text, float(g), int(s or 0),
                                 int(n or 1), int(k) if k else None, bx if m == "boxes" else None, sizes_list,
                                 bool(do_score), ctx.config.device, bool(regions))
        yield from wait_for(task, 5)
        if task.state == "failed":
            yield f"**Error:** {task.error}", gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        out = task.result
        yield (_generated_text(out, task, gen.lora_info(folder).backbone), *show(out.name), _toy_table(ctx),
               gr.Dropdown(choices=[p.name for p in ctx.ws.generation_dirs()], value=out.name))

    lora.change(_reset_boxes, [lora], [boxes, pending, canvas, target, layout_json])
    canvas.select(on_canvas, [lora, target, boxes, pending], [boxes, pending, canvas, target, layout_json, mode])
    clear.click(_reset_boxes, [lora], [boxes, pending, canvas, target, layout_json])
    go.click(on_generate, [lora, prompt, gamma, seed, num, steps, mode, sizes, boxes, score, f.regions],
             [status, gallery, table, toy_table, earlier])
    lora.change(lambda f, p: (lambda v: gr.skip() if v is None else v)(_prompt_for(f, p)), [lora, prompt], [prompt])
    earlier.change(show, [earlier], [gallery, table])

    tab.select(lambda current: (_lora_dropdown(ctx, current), _toy_table(ctx)), [lora], [lora, toy_table],
               show_progress="hidden")
