import torch

from varco_ocr.confidence import word_confidences
from varco_ocr.generation import LoopGuard, repeated_tail


def test_repeated_tail_detects_long_loops_only():
    block = [5, 6, 7, 8, 9]
    looping = torch.tensor([[1, 2, 3] + block * 30])
    varied = torch.tensor([list(range(153))])
    short = torch.tensor([[1, 2] + block * 3])  # three repeats are not yet a loop
    assert repeated_tail(looping, 96, 4, 256).tolist() == [True]
    assert repeated_tail(varied, 96, 4, 256).tolist() == [False]
    assert repeated_tail(short, 96, 4, 256).tolist() == [False]


def test_loop_guard_flags_only_the_looping_sequence():
    guard = LoopGuard(prompt_length=2, min_span=12, min_repeats=4, check_every=1)
    ids = torch.tensor([[0, 0] + [1, 2, 3] * 6, [0, 0] + list(range(18))])
    assert guard(ids).tolist() == [True, False]
    assert guard.looped.tolist() == [True, False]


def test_word_confidence_is_minimum_over_text_tokens():
    OPEN, CLOSE, BBOX = 100, 101, 102
    ids = [OPEN, 1, 2, CLOSE, BBOX, 9, OPEN, 3, CLOSE, BBOX, OPEN, 4]
    probs = [0.99, 0.9, 0.6, 0.99, 0.9, 0.1, 0.9, 0.8, 0.9, 0.9, 0.9, 0.7]
    assert word_confidences(ids, probs, OPEN, CLOSE) == [0.6, 0.8, None]
