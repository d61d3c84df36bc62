"""Optional LLM layout provider (paper Sec. 4.2, Appendix B.5; after Cho et al., "Visual programming").

Asks any OpenAI-compatible chat endpoint (``POST <url>/chat/completions``) to turn the prompt into one box
per subject, so that ``x_init`` matches interactions like "[V1] toy sitting on [V2] can". Off by default
(``--layout llm --llm-url URL``); nothing else in mudi needs it and no test needs a network: the HTTP call
goes through a replaceable ``transport`` function (urllib by default).

A reply that is not the requested JSON (wrong subjects, pixel boxes, empty boxes, no JSON at all) or a
failed request never stops generation: :func:`llm_layout_or_none` logs a warning and returns ``None``, and
the caller falls back to a random Seg-Mix layout.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from mudi.core.layout import NormBox, parse_layout
from mudi.errors import MudiError

logger = logging.getLogger(__name__)

#: ``transport(url, body, headers, timeout_s) -> response body``; replace it to test or to add auth schemes.
Transport = Callable[[str, bytes, dict, float], bytes]

SYSTEM_PROMPT = (
    "You are a layout planner for a text-to-image model. Given an image caption and the subjects it must "
    "show, place each subject in a square image by giving its bounding box as normalised coordinates "
    "[x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (x to the right, y downwards). Make the "
    "boxes realistic in size and position for the scene and the interactions described; subjects may "
    "overlap when they touch. Answer with JSON only: an object mapping each subject name exactly as given "
    "to its box, with no other text."
)


def chat_completions_url(url: str) -> str:
    """``http://host:8000/v1`` → ``http://host:8000/v1/chat/completions`` (kept as is if already there)."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise MudiError(f"LLM url {url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def build_messages(prompt: str, phrases: Sequence[str]) -> list[dict]:
    """The chat messages asking for one box per subject phrase."""
    example = {p: [0.1 + 0.4 * k, 0.3, 0.5 + 0.4 * k, 0.9] for k, p in enumerate(phrases[:2])}
    user = (f"Caption: {prompt}\nSubjects: {json.dumps(list(phrases))}\n"
            f"Answer format example: {json.dumps(example)}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_llm_reply(text: str, phrases: Sequence[str]) -> list[NormBox]:
    """Boxes in subject order from the assistant's reply text; :class:`MudiError` if it is malformed.

    Accepts the JSON alone or inside a ```json fence, with text around it; subjects may be named by their
    phrase or ``V1``, ``V2``…; every box must be normalised (see :func:`mudi.core.layout.parse_layout`).
    """
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        raise MudiError(f"LLM reply holds no JSON: {text[:120]!r}")
    start = min(starts)
    end = body.rfind("}" if body[start] == "{" else "]")
    try:
        data = json.loads(body[start:end + 1])
    except json.JSONDecodeError as e:
        raise MudiError(f"LLM reply is not valid JSON ({e.msg}): {text[:120]!r}") from None
    keys = [[p, p.split()[0]] if p.split() else [p] for p in phrases]
    return parse_layout(data, keys, source="LLM reply")


def _urllib_transport(url: str, body: bytes, headers: dict, timeout_s: float) -> bytes:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (the user gives the URL)
        return resp.read()


class InsecureEndpoint(MudiError):
    """An API key would travel unencrypted: refused, never a silent fallback."""


def check_key_transport(url: str, what: str = "MUDI_LLM_API_KEY") -> None:
    """An API key (``what``) goes only over https, or to this machine (loopback) over plain http."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "https":
        return
    host = (parsed.hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise InsecureEndpoint(f"refusing to send {what} to {url} over plain http: use an https:// URL "
                               "(or a server on this machine, http://127.0.0.1:PORT/v1)")


def request_layout(prompt: str, phrases: Sequence[str], url: str, model: str = "gpt-4o",
                   api_key: str | None = None, timeout_s: float = 60.0,
                   transport: Transport | None = None) -> list[NormBox]:
    """Ask the endpoint for a layout; raises :class:`MudiError` on any failure (HTTP, JSON, boxes).

    ``api_key`` defaults to the ``MUDI_LLM_API_KEY`` environment variable (sent as a Bearer token; local
    servers usually need none).
    """
    api_key = api_key if api_key is not None else os.environ.get("MUDI_LLM_API_KEY")
    headers = {"Content-Type": "application/json"}
    if api_key:
        check_key_transport(url)
        headers["Authorization"] = f"Bearer {api_key}"
    payload = {"model": model, "messages": build_messages(prompt, phrases), "temperature": 0}
    endpoint = chat_completions_url(url)
    try:
        raw = (transport or _urllib_transport)(endpoint, json.dumps(payload).encode("utf-8"), headers, timeout_s)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise MudiError(f"LLM request to {endpoint} failed: {e}") from None
    try:
        reply = json.loads(raw)
        content = reply["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise MudiError(f"{endpoint} did not answer like an OpenAI chat completion: {raw[:120]!r}") from None
    if not isinstance(content, str):
        raise MudiError(f"{endpoint}: the reply's message content is not text: {content!r}")
    return parse_llm_reply(content, phrases)


def llm_layout_or_none(prompt: str, phrases: Sequence[str], url: str, model: str = "gpt-4o",
                       api_key: str | None = None, timeout_s: float = 60.0,
                       transport: Transport | None = None) -> list[NormBox] | None:
    """:func:`request_layout`, but a failure logs a warning and returns ``None`` (use a random layout)."""
    try:
        return request_layout(prompt, phrases, url, model, api_key, timeout_s, transport)
    except InsecureEndpoint:
        raise
    except MudiError as e:
        logger.warning("LLM layout failed, falling back to a random layout: %s", e)
        return None
