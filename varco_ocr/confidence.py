"""Word confidences from per-token probabilities: pure Python, no torch.

A word's confidence is the *minimum* probability over the tokens of its text (between ``<char>`` and
``</char>``): one doubtful character makes the word doubtful. The local engine feeds it token ids and
the probabilities its recorder kept (``varco_ocr.generation``); the server backend feeds it the token
strings and log-probabilities a server returns. It lives apart from ``varco_ocr.generation``, which
needs torch and transformers, so the server path never imports them (2.3 s and ~480 MB per process
for 1.5 ms of arithmetic per page; a test enforces it).
"""

from __future__ import annotations

from typing import Hashable, Sequence


def word_confidences(tokens: Sequence[Hashable], probs: Sequence[float], open_tok: Hashable, close_tok: Hashable) -> list[float | None]:
    """Confidence of each ``<char>`` entry, in order: the minimum probability of the tokens between
    ``open_tok`` (``<char>``, an id or a token string) and the next ``close_tok`` (``</char>``); None
    for an entry with no text tokens or no closing tag."""
    out: list[float | None] = []
    current: list[float] | None = None
    for tok, p in zip(tokens, probs):
        if tok == open_tok:
            if current is not None:
                out.append(None)  # unclosed entry: parser drops it too, keep ordinals aligned
            current = []
        elif tok == close_tok and current is not None:
            out.append(min(current) if current else None)
            current = None
        elif current is not None:
            current.append(float(p))
    if current is not None:
        out.append(None)
    return out
