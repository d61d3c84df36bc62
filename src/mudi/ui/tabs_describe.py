"""The review of ``mudi describe`` on the Subjects tab (gradio): ask, edit the proposed descriptive classes and
captions in a table, write the accepted ones (:mod:`mudi.ui.describe`). The API key is never typed here: it is
read from ``MUDI_LLM_API_KEY`` in the environment of ``mudi ui``."""

from __future__ import annotations

import gradio as gr

from mudi.adapters import registry
from mudi.ui import describe as ops
from mudi.ui.context import UiContext, wait_for


def build_describe_section(ctx: UiContext, picker: gr.CheckboxGroup) -> None:
    with gr.Accordion("Descriptive classes and captions from a vision-language model (mudi describe)", open=False):
        gr.Markdown("Tick **all** the subjects of the run: the model sees them together, so their classes tell "
                    "them apart. Nothing is written until you accept; hand-written values are kept. The key of an "
                    "endpoint comes from `MUDI_LLM_API_KEY` in the environment of `mudi ui` (docs/describe.md).")
        with gr.Row():
            provider = gr.Dropdown(registry.names("describer"), value="openai", label="Describer",
                                   elem_id="describe-provider")
            url = gr.Textbox(label="Endpoint (openai)", placeholder="http://127.0.0.1:8000/v1", elem_id="describe-url")
            model = gr.Textbox(label="Model (name, or checkpoint for transformers)", placeholder="gpt-4o",
                               elem_id="describe-model")
            ask = gr.Button("Ask", variant="primary", elem_id="describe-ask")
        table = gr.Dataframe(headers=ops.HEADERS, datatype=["str"] * 4, column_count=(4, "fixed"), type="array",
                             interactive=True, wrap=True, elem_id="describe-table",
                             label="Proposals (edit the value column; empty a value to skip it)")
        write = gr.Button("Write the proposed values", elem_id="describe-write")
        status = gr.Markdown(elem_id="describe-status")

    def on_ask(ticked, name, endpoint, model_name):
        task = ctx.worker.submit("describe", ops.propose, ctx.subject_dirs(ticked), name, endpoint or "",
                                 model_name or "", ctx.config.device)
        yield from wait_for(task, 2)
        if task.state == "failed":
            yield f"**Error:** {task.error}", gr.skip()
            return
        rows, report = task.result
        yield f"asked in {task.elapsed():.0f} s\n\n```\n{report}\n```", rows

    def on_write(ticked, rows):
        try:
            return ops.accept(ctx.subject_dirs(ticked), rows if isinstance(rows, list) else rows.values.tolist())
        except Exception as e:  # a MudiError (a bad edit) or a file problem: shown, nothing written
            return f"**Error:** {ctx.error_text(e)}"

    ask.click(on_ask, [picker, provider, url, model], [status, table])
    write.click(on_write, [picker, table], [status])
