"""The page (gradio): a subject picker above five tabs — Subjects, Masks, Seg-Mix, Train, Generate."""

from __future__ import annotations

import gradio as gr

from mudi.adapters import registry
from mudi.ui.config import TOY_CHOICE, UiConfig
from mudi.ui.context import UiContext
from mudi.ui.state import Workspace
from mudi.ui.tabs_describe import build_describe_section
from mudi.ui.tabs_runs import TINY_NOTE, build_generate_tab, build_train_tab
from mudi.ui.tabs_subjects import (
    build_masks_tab,
    build_segmix_tab,
    build_subjects_tab,
    picker_update,
    subject_choices,
)
from mudi.ui.toy import TOY_NOTE

# System fonts only: the page loads nothing from outside this machine.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
CSS = "#subject-picker label { font-size: 0.95em; } footer { display: none !important; }"


def header(ctx: UiContext) -> str:
    text = (f"## mudi — multi-subject personalization (MuDI)\nWorkspace `{ctx.ws.root}`: subjects, runs and "
            "generations are ordinary mudi folders; the CLI reads and resumes them.")
    if registry.is_tiny(ctx.config.backbone):
        text += "\n\n" + TINY_NOTE.format(backbone=ctx.config.backbone)
    elif ctx.config.backbone == TOY_CHOICE:
        text += "\n\n" + TOY_NOTE
    return text


def build_app(config: UiConfig, ws: Workspace | None = None, ctx: UiContext | None = None) -> gr.Blocks:
    ctx = ctx or UiContext(config, ws or Workspace.open(config.workspace))
    with gr.Blocks(title="mudi") as demo:
        gr.Markdown(header(ctx))
        with gr.Row():
            picker = gr.CheckboxGroup(subject_choices(ctx), label="Subjects to work on ([V1], [V2], … in this order)",
                                      elem_id="subject-picker", scale=8)
            refresh = gr.Button("Refresh", scale=1, elem_id="refresh")
        with gr.Tabs():
            with gr.Tab("1 · Subjects", id="subjects") as tab:
                build_subjects_tab(ctx, picker, tab)
                build_describe_section(ctx, picker)
            with gr.Tab("2 · Masks", id="masks") as tab:
                build_masks_tab(ctx, picker, tab)
            with gr.Tab("3 · Seg-Mix", id="segmix") as tab:
                build_segmix_tab(ctx, picker, tab)
            with gr.Tab("4 · Train", id="train") as tab:
                build_train_tab(ctx, picker, tab)
            with gr.Tab("5 · Generate", id="generate") as tab:
                build_generate_tab(ctx, tab)
        refresh.click(lambda ticked: picker_update(ctx, ticked), [picker], [picker])
        demo.load(lambda ticked: picker_update(ctx, ticked), [picker], [picker])
    return demo
