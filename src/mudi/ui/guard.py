"""What may talk to ``mudi ui``: an ASGI middleware in front of gradio (imports no gradio).

* **Host and Origin** (DNS rebinding, cross-site requests): on loopback, a request whose ``Host`` or ``Origin``
  names anything but a loopback address is refused with 403, so a web page on ``evil.example`` that rebinds its
  name to 127.0.0.1 reaches nothing. Serving beyond this machine accepts the names given in ``allowed_hosts``
  (``*``: any) and relies on the access token (gradio's login) as well.
* **Files**: gradio serves files under ``/gradio_api/file=``; from the workspace only images (what the pages
  show), never LoRA weights, configs, logs or lock files.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from mudi.ui.config import LOOPBACK_HOSTS

SERVED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".svg")
FILE_ROUTES = ("/gradio_api/file=", "/file=")


def host_name(value: str) -> str:
    """``"Host"`` or ``"Origin"`` header value → its host name, lower case, without port or brackets."""
    value = value.strip()
    if "://" in value:
        return (urlsplit(value).hostname or "").lower()
    return (urlsplit("//" + value).hostname or "").lower()


class RequestGuard:
    """ASGI middleware: ``RequestGuard(app, allowed_hosts=(...), workspace=Path)``."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS, workspace: str | Path | None = None):
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}
        self.workspace = Path(workspace).resolve() if workspace else None

    def host_ok(self, value: str | None) -> bool:
        if value is None:
            return True
        return "*" in self.allowed or host_name(value) in self.allowed

    def file_ok(self, path: str) -> bool:
        route = next((r for r in FILE_ROUTES if path.startswith(r)), None)
        if route is None or self.workspace is None:
            return True
        target = Path(unquote(path[len(route):]))
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError):
            return False
        inside = resolved == self.workspace or self.workspace in resolved.parents
        return not inside or resolved.suffix.lower() in SERVED_SUFFIXES

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            why = None
            if not self.host_ok(headers.get("host")):
                why = "this UI answers only to its own address (Host header refused)"
            elif not self.host_ok(headers.get("origin")):
                why = "requests from other web sites are refused (Origin header)"
            elif scope["type"] == "http" and not self.file_ok(scope.get("path", "")):
                why = "only the workspace's images are served"
            if why is not None:
                await _refuse(scope, receive, send, why)
                return
        await self.app(scope, receive, send)


async def _refuse(scope, receive, send, why: str) -> None:
    if scope["type"] == "websocket":
        await receive()  # the connect event
        await send({"type": "websocket.close", "code": 1008})
        return
    body = f"403 Forbidden: {why}\n".encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
