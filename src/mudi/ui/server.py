"""``mudi ui`` as a library call: open the workspace, build the page and serve it until Ctrl-C. gradio is
imported here, on demand, so that it stays an optional extra."""

from __future__ import annotations

import logging
import os

from mudi.errors import MudiError
from mudi.ui.config import UiConfig
from mudi.ui.state import Workspace

log = logging.getLogger(__name__)
MISSING_GRADIO = "the web UI needs gradio, which is not installed: pip install 'mudi[ui]'"


def import_gradio():
    """gradio, or a one-line :class:`MudiError` saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio
    except ImportError:
        raise MudiError(MISSING_GRADIO) from None
    return gradio


def serve(config: UiConfig) -> None:
    """Serve the UI on ``config.host:config.port`` (never opens a browser); returns when it is stopped.
    Training runs started from the page are processes of their own and go on after it."""
    import_gradio()
    from mudi.ui.app import CSS, THEME, build_app

    ws = Workspace.open(config.workspace)
    for noisy in ("httpx", "httpcore"):  # gradio's start-up self-checks, one INFO line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    demo = build_app(config, ws)
    if not config.is_local:
        log.warning("mudi ui: listening on %s%s: anyone who can reach it can use this UI (there is no password)",
                    config.host, " and a public share link" if config.share else "")
    print(f"mudi ui: workspace {ws.root}; open http://{config.host}:{config.port}/ — Ctrl-C stops the UI "
          "(training runs go on)", flush=True)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=config.host, server_port=config.port, share=config.share, inbrowser=False,
        allowed_paths=[str(ws.root)], ssr_mode=False, show_error=True, theme=THEME, css=CSS)
