"""Generation helpers shared by the local engine: the loop guard and per-word confidences.

Loop guard: OCR models sometimes fall into a loop, writing the same entry (or the same few tokens)
until the token budget runs out, which on a dense page costs minutes. The guard watches the tail of
each sequence and stops it as soon as its last tokens are one block repeated many times; the page is
then flagged ``truncated``. A real page never repeats a whole ``<char>…</char><bbox>…</bbox>`` entry
verbatim (two words cannot share one box), so exact repetition of a long tail is a reliable signal.

Confidence: greedy decoding picks the most probable token at each step; the recorder keeps that
token's probability (one float per sequence per step, never the full vocabulary scores, which at
151,936 x 8,192 would be gigabytes). Word confidences are computed from those by the torch-free
``varco_ocr.confidence.word_confidences`` (shared with the server backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, StoppingCriteria


@dataclass
class LoopGuard(StoppingCriteria):
    """Stop a sequence whose generated tail is a block of ``period`` tokens repeated, covering at
    least ``min_span`` tokens and at least ``min_repeats`` copies, for any period up to ``max_period``.

    ``end_ids``: a row that has produced one of these has finished; in a batch it is then padded with
    the same token until the longest row ends, a "loop" that must not flag the page truncated."""

    prompt_length: int
    end_ids: tuple[int, ...] = ()
    min_span: int = 96
    min_repeats: int = 4
    max_period: int = 256
    check_every: int = 8
    looped: torch.Tensor | None = field(default=None, init=False)
    _step: int = field(default=0, init=False)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        batch = input_ids.shape[0]
        if self.looped is None:
            self.looped = torch.zeros(batch, dtype=torch.bool)
        self._step += 1
        generated = input_ids[:, self.prompt_length :]
        if self._step % self.check_every == 0:
            tail_loops = repeated_tail(generated, self.min_span, self.min_repeats, self.max_period)
            if self.end_ids:
                finished = torch.isin(generated, torch.tensor(self.end_ids, device=generated.device)).any(dim=1)
                tail_loops &= ~finished
            self.looped |= tail_loops.cpu()
        return self.looped.to(input_ids.device).clone()


def repeated_tail(tokens: torch.Tensor, min_span: int, min_repeats: int, max_period: int) -> torch.Tensor:
    """For each row of ``tokens`` (batch, length): is its tail some block repeated back to back?"""
    batch, length = tokens.shape
    found = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    for period in range(1, max_period + 1):
        repeats = max(min_repeats, -(-min_span // period))
        span = period * repeats
        if span > length:
            break
        tail = tokens[:, length - span :]
        # A tail of period p equals itself shifted by p.
        found |= (tail[:, period:] == tail[:, :-period]).all(dim=1)
    return found


class ChosenTokenProbability(LogitsProcessor):
    """Records, per step, the probability of the token greedy decoding is about to pick.

    It must run last among the logits processors (transformers appends user processors after its
    defaults), so it sees the same scores the argmax does. It returns the scores unchanged.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = scores.float().max(dim=-1).values - torch.logsumexp(scores.float(), dim=-1)
        self.steps.append(logp.exp().cpu())
        return scores

    def probabilities(self) -> torch.Tensor:
        """(batch, generated steps) probabilities of the chosen tokens."""
        if not self.steps:
            return torch.zeros(0, 0)
        return torch.stack(self.steps, dim=1)
