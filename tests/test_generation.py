import pytest
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


def _tail(block: list[int], copies: int) -> list[int]:
    """Distinct tokens (no repetition), then ``block`` repeated ``copies`` times."""
    return list(range(1000, 1040)) + block * copies


def test_loop_guard_thresholds_are_the_defaults_exactly():
    """The real defaults (min_span 96, min_repeats 4): a period-5 loop needs ceil(96 / 5) = 20 copies
    (100 tokens); 19 copies (95 tokens) are not yet a loop. Rounding the copies down would flag 95."""
    guard = LoopGuard(prompt_length=0)
    span, repeats = guard.min_span, guard.min_repeats
    assert (span, repeats) == (96, 4)
    block = [5, 6, 7, 8, 9]
    assert repeated_tail(torch.tensor([_tail(block, 19)]), span, repeats, 256).tolist() == [False]
    assert repeated_tail(torch.tensor([_tail(block, 20)]), span, repeats, 256).tolist() == [True]
    # a long block: at least min_repeats copies, even when fewer would cover min_span
    long_block = list(range(40))  # 3 copies = 120 tokens >= 96, still not a loop
    assert repeated_tail(torch.tensor([_tail(long_block, 3)]), span, repeats, 256).tolist() == [False]
    assert repeated_tail(torch.tensor([_tail(long_block, 4)]), span, repeats, 256).tolist() == [True]
    # a period of exactly 96 / 4 = 24 needs 4 copies (96 tokens), 3 are not enough
    block24 = list(range(24))
    assert repeated_tail(torch.tensor([_tail(block24, 3)]), span, repeats, 256).tolist() == [False]
    assert repeated_tail(torch.tensor([_tail(block24, 4)]), span, repeats, 256).tolist() == [True]


def test_loop_guard_ignores_rows_that_ended_and_are_padded():
    """In a batch, a row that answered <|im_end|> is padded with the pad token until the longest row
    ends: 100 copies of one token, which is not a loop of the model's (it would flag a finished page
    truncated only when it shares a batch with a longer one)."""
    END, PAD = 2, 3
    guard = LoopGuard(prompt_length=1, end_ids=(END, PAD), check_every=1)
    finished = [0] + list(range(10, 20)) + [END] + [PAD] * 100
    looping = [0] + list(range(10, 20)) + [7, 8] * 51
    running = [0] + list(range(100, 211))
    ids = torch.tensor([finished, looping[:112], running])
    assert guard(ids).tolist() == [False, True, False]
    # once flagged, a looping row stays flagged after it is stopped and padded
    ids = torch.tensor([finished + [PAD], looping[:112] + [PAD], running + [5]])
    assert guard(ids).tolist() == [False, True, False]


def test_recorded_probability_is_the_chosen_tokens_softmax_probability():
    import math

    from varco_ocr.generation import ChosenTokenProbability

    recorder = ChosenTokenProbability()
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    assert recorder(torch.zeros(2, 1, dtype=torch.long), scores) is scores  # scores pass unchanged
    expected = [math.exp(2) / (math.exp(2) + math.exp(1) + 1), math.exp(5) / (math.exp(5) + 2)]
    assert recorder.probabilities()[:, 0].tolist() == pytest.approx(expected)  # 0.665, 0.987 (sigmoid: 0.881, 0.993)


# --- boundaries found by the mutation run (benchmarks/mutation.sh, RESULTS.md "Mutation testing") ---


def test_repeated_tail_period_and_length_boundaries():
    block3 = [1, 2, 3]
    # the whole sequence is the loop (span == length), at a period of exactly max_period
    assert repeated_tail(torch.tensor([block3 * 4]), 12, 4, 3).tolist() == [True]
    # a period one past max_period is not looked for (the lead-in keeps period 3's 18-token span in reach)
    assert repeated_tail(torch.tensor([[100, 101, 102, 103] + [1, 2, 3, 4] * 4]), 16, 4, 3).tolist() == [False]
    # period 1 is looked for: four copies of one token, too short to be a period-2 loop (8 tokens)
    assert repeated_tail(torch.tensor([[9, 5, 5, 5, 5]]), 4, 4, 4).tolist() == [True]


def test_loop_guard_checks_every_check_every_steps_exactly():
    guard = LoopGuard(prompt_length=0, min_span=8, min_repeats=4, max_period=2, check_every=8)
    looping = torch.tensor([[7, 8] * 8])
    flags = [guard(looping).item() for _ in range(9)]
    assert flags == [False] * 7 + [True, True]  # the first check is at the 8th step, and a flag stays


def test_an_entry_with_no_text_tokens_has_no_confidence():
    OPEN, CLOSE = 100, 101
    assert word_confidences([OPEN, CLOSE, OPEN, 4, CLOSE], [0.9, 0.9, 0.9, 0.5, 0.9], OPEN, CLOSE) == [None, 0.5]
