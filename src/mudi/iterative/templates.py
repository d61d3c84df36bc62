"""The prompts of iterative training: simple multi-subject prompts with ``[V1]``, ``[V2]`` … (a template list
shipped with mudi, ``prompts.txt``; any file of the same form), or, optionally, asked of an LLM (any
OpenAI-compatible chat endpoint, off by default; on failure the templates are used, with a warning).

A template is used for ``N`` subjects when it names exactly ``[V1]`` … ``[VN]``; image ``g`` of a run uses
template ``g mod T`` (rounds continue where the previous one stopped), so prompts are spread evenly.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

from mudi.core.prompts import placeholder_count
from mudi.errors import MudiError
from mudi.sampling.layout_llm import chat_completions_url, check_key_transport

log = logging.getLogger(__name__)
#: ``transport(url, body, headers, timeout_s) -> response body`` (tests replace it; urllib by default).
Transport = Callable[[str, bytes, dict, float], bytes]
_PLACEHOLDER = re.compile(r"\[V(\d+)\]")


def shipped_prompts_file() -> Path:
    """The template list shipped with mudi (``mudi/iterative/prompts.txt``)."""
    return Path(str(files("mudi.iterative") / "prompts.txt"))


def read_templates(path: str | Path) -> list[str]:
    """The prompt lines of a template file (blank lines and ``#`` comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise MudiError(f"{p}: no such prompts file; give a text file with one prompt per line, using [V1], [V2] ...")
    lines = [line.split("#", 1)[0].strip() for line in p.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def names_all(template: str, num_subjects: int) -> bool:
    """Whether ``template`` names exactly the subjects ``[V1]`` … ``[VN]``, each at least once."""
    used = {int(m.group(1)) for m in _PLACEHOLDER.finditer(template)}
    return used == set(range(1, num_subjects + 1))


def templates_for(path: str | Path, num_subjects: int) -> list[str]:
    """The templates of ``path`` usable for ``num_subjects`` subjects; none is a one-line error."""
    usable = [t for t in read_templates(path) if names_all(t, num_subjects)]
    if not usable:
        counts = sorted({placeholder_count(t) for t in read_templates(path)})
        raise MudiError(f"{path}: no prompt names exactly [V1] ... [V{num_subjects}] for your {num_subjects} "
                        f"subjects (its prompts name {counts} subjects); add some, or give --prompts_file")
    return usable


def _urllib(url: str, body: bytes, headers: dict, timeout_s: float) -> bytes:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (the user gives the URL)
        return resp.read()


def llm_templates(num_subjects: int, num_prompts: int, url: str, model: str, api_key: str | None = None,
                  examples: Sequence[str] = (), timeout_s: float = 60.0,
                  transport: Transport | None = None) -> list[str]:
    """Ask the endpoint for ``num_prompts`` simple prompts naming ``[V1]`` … ``[VN]``; raises
    :class:`MudiError` when it fails or answers no usable line."""
    names = ", ".join(f"[V{k + 1}]" for k in range(num_subjects))
    system = ("You write short, simple prompts for a text-to-image model. Each prompt shows the given subjects "
              "together in an everyday scene. Use the placeholders exactly as given, each once, and nothing else "
              "for the subjects. Answer with one prompt per line, no numbering, no other text.")
    user = f"Write {num_prompts} prompts with the subjects {names}." + (
        "\nExamples:\n" + "\n".join(examples[:3]) if examples else "")
    headers = {"Content-Type": "application/json"}
    if api_key:
        check_key_transport(url)
        headers["Authorization"] = f"Bearer {api_key}"
    payload = {"model": model, "temperature": 0,
               "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    endpoint = chat_completions_url(url)
    try:
        raw = (transport or _urllib)(endpoint, json.dumps(payload).encode("utf-8"), headers, timeout_s)
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise MudiError(f"LLM request to {endpoint} failed: {e}") from None
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise MudiError(f"{endpoint} did not answer like an OpenAI chat completion") from None
    lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line).strip() for line in str(content).splitlines()]
    usable = [line for line in lines if line and names_all(line, num_subjects)]
    if not usable:
        raise MudiError(f"{endpoint}: no line of the reply names exactly {names}")
    return usable[:num_prompts]
