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
    from starlette.middleware import Middleware

    from mudi.ui.guard import RequestGuard

    demo = build_app(config, ws)
    hosts, auth = access(config)
    if auth is not None:
        log.warning("mudi ui: listening on %s%s; the page asks for user 'mudi' and the access token %s",
                    config.host, " and a public share link" if config.share else "", auth[1])
    print(f"mudi ui: workspace {ws.root}; open http://{config.host}:{config.port}/ — Ctrl-C stops the UI "
          "(training runs go on)", flush=True)
    guard = Middleware(RequestGuard, allowed_hosts=hosts, workspace=ws.root)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=config.host, server_port=config.port, share=config.share, inbrowser=False,
        allowed_paths=[str(ws.root)], ssr_mode=False, show_error=True, theme=THEME, css=CSS, auth=auth,
        max_file_size=f"{config.max_upload_mb}mb", app_kwargs={"middleware": [guard]})


def access(config: UiConfig) -> tuple[tuple[str, ...], tuple[str, str] | None]:
    """The host names the page may be reached by, and gradio's ``auth`` (None on loopback): serving beyond this
    machine needs the access token (``--token``, ``$MUDI_UI_TOKEN`` or a random one)."""
    from mudi.ui.config import LOOPBACK_HOSTS

    if config.is_local:
        return LOOPBACK_HOSTS, None
    import secrets

    token = config.token or os.environ.get("MUDI_UI_TOKEN", "") or secrets.token_urlsafe(16)
    named = [] if config.host in ("0.0.0.0", "::") else [config.host]
    hosts = (*LOOPBACK_HOSTS, *named, *config.allowed_hosts)
    if config.share or config.host in ("0.0.0.0", "::") and not config.allowed_hosts:
        hosts = ("*",)  # reached by names this process cannot know: the token is the guard
    return hosts, ("mudi", token)
