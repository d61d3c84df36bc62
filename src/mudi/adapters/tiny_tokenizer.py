"""A CLIP tokenizer built offline from a hand-written vocabulary (for tiny test/demo models).

Byte-level BPE with every byte as a token (plain and word-final ``</w>`` forms) and a few merges, so any
text tokenizes. The special tokens come *last* in the vocabulary: OWLv2 treats id 0 specially (it masks
query tokens equal to the start token's position), so neither special token may be id 0.
"""

from __future__ import annotations

from functools import lru_cache


def bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


# A few merges so common prompt words are short; anything else falls back to characters.
_MERGES = ["p h", "o t", "ph ot", "phot o</w>", "a n", "an d</w>", "o f</w>", "t h", "th e</w>"]


@lru_cache(maxsize=4)
def build_tiny_clip_vocab() -> tuple[dict[str, int], tuple[str, ...]]:
    chars = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for m in _MERGES:
        tok = m.replace(" ", "")
        if tok not in vocab:
            vocab[tok] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, tuple(_MERGES)


def build_tiny_clip_tokenizer(model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` with ``len(tokenizer) == TINY_CLIP_VOCAB_SIZE (523)``, built without any download."""
    from transformers import CLIPTokenizer

    vocab, merges = build_tiny_clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split(" ")) for m in merges],
                         model_max_length=model_max_length)


TINY_CLIP_VOCAB_SIZE = len(build_tiny_clip_vocab()[0])
