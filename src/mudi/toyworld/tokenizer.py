"""A word-level CLIP tokenizer for the toy world, built offline.

Byte-level BPE whose merges are learned on the word list itself, so every world word and every identifier
is exactly one token; any other text falls back to single characters (every byte is in the vocabulary, plain
and word-final). The special tokens come *last*: OWLv2 masks query tokens equal to id 0's position, so
neither ``<|startoftext|>`` nor ``<|endoftext|>`` may be id 0.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mudi.adapters.tiny_tokenizer import bytes_to_unicode


def learn_word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (most frequent pair first, ties by the pair) until each word is a single token.

    Applying them in rank order, as CLIP's tokenizer does, rebuilds every word of ``words`` whole.
    """
    seqs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in dict.fromkeys(words)}
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(p for s in seqs.values() for p in zip(s, s[1:]))
        if not counts:
            return merges
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        joined = pair[0] + pair[1]
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = tuple(out)


def build_word_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)``: bytes, word-final bytes, every merge result, then the two special tokens."""
    chars = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for tok in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(tok, len(vocab))
    merges = learn_word_merges([w for w in words if len(w) > 1])
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def build_word_tokenizer(words: list[str], model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` in which each of ``words`` is one token (see module docstring)."""
    from transformers import CLIPTokenizer

    vocab, merges = build_word_vocab(words)
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m) for m in merges],
                         model_max_length=model_max_length)


def word_token_ids(tokenizer, words: list[str]) -> list[int]:
    """The single token id of each word (raises if a word splits into several tokens)."""
    ids = []
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise ValueError(f"word {w!r} is {len(toks)} tokens {toks}, expected one")
        ids.append(toks[0])
    return ids


def write_slow_tokenizer_files(words: list[str], folder: Path) -> None:
    """``vocab.json`` + ``merges.txt`` of :func:`build_word_vocab` next to ``tokenizer.json``, for transformers
    releases that read those."""
    vocab, merges = build_word_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
