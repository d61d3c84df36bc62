"""The ``toyworld`` key of a subject.yaml: the toy-world identity of a toy subject, so the toy world's checker
and detector can judge images of any toy subject a user writes (docs/toyworld.md)::

    toyworld:
      shape: square      # circle | square | triangle
      top: red           # a palette colour
      bottom: yellow     # optional: a second colour below the middle

Only the form is checked here (``data`` sits below the toy world); the toy world checks the words against its
shapes and palette when it reads the identity (:func:`mudi.toyworld.evaluate.toy_subject`).
"""

from __future__ import annotations

TOYWORLD_KEY = "toyworld"
IDENTITY_KEYS = ("shape", "top", "bottom")
_EXAMPLE = "e.g. toyworld: {shape: square, top: red, bottom: yellow}"


def toyworld_field(value: object, where: object) -> dict[str, str] | None:
    """The ``toyworld`` mapping of a subject.yaml (``shape``, ``top``, optional ``bottom``: one word each), None
    when absent; a one-line error otherwise."""
    from mudi.errors import MudiError

    if value is None:
        return None
    if not isinstance(value, dict):
        raise MudiError(f"{where}: '{TOYWORLD_KEY}' must be a mapping, not {type(value).__name__}; {_EXAMPLE}")
    unknown = sorted(str(k) for k in value if k not in IDENTITY_KEYS)
    if unknown:
        raise MudiError(f"{where}: '{TOYWORLD_KEY}' has unknown key(s) {unknown[:3]}; allowed: {list(IDENTITY_KEYS)}")
    out = {}
    for key in IDENTITY_KEYS:
        v = value.get(key)
        if v is None and key == "bottom":
            continue
        if not isinstance(v, str) or len(v.split()) != 1:
            raise MudiError(f"{where}: '{TOYWORLD_KEY}.{key}' must be one word, not {v!r}; {_EXAMPLE}")
        out[key] = v.strip()
    return out
