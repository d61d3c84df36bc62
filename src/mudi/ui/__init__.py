"""``mudi ui``: a web UI (gradio, the optional extra ``mudi[ui]``) over the same library calls as the CLI.

Only :mod:`mudi.ui.app`, :mod:`mudi.ui.tabs_subjects` and :mod:`mudi.ui.tabs_runs` import gradio; the rest
(workspace, jobs, layouts, generation, training form) is plain Python that the tests use without it.
"""
