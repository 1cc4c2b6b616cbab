"""The chunked losses equal the plain full-logits losses, values and gradients, to 1e-5."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    chunked_cross_entropy,
    final_hidden_states,
    fused_linear_cross_entropy,
    label_logprobs,
    sequence_logprobs,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    from varco_ocr.testing.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def _problem(n_tokens=37, hidden=16, vocab=101, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n_tokens, hidden, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=gen, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, vocab, (n_tokens,), generator=gen)
    return h, w, labels


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("token_chunk,vocab_chunk", [(1, None), (5, None), (8, 10), (37, 101), (1000, 7)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_cross_entropy_matches_plain_loss_and_gradients(token_chunk, vocab_chunk, reduction):
    h, w, labels = _problem()
    labels[[0, 3, 4, 30]] = -100  # ignored positions, including a run inside one chunk
    plain = F.cross_entropy(h @ w.T, labels, ignore_index=-100, reduction=reduction)
    chunked = chunked_cross_entropy(h, w, labels, chunk_size=token_chunk, vocab_chunk=vocab_chunk, reduction=reduction)
    torch.testing.assert_close(chunked.double(), plain, atol=1e-5, rtol=1e-5)
    for got, want in zip(_grads(chunked, h, w), _grads(plain, h, w)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_chunked_cross_entropy_float32_batched_input_matches_plain():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(2, 9, 8, generator=gen, requires_grad=True)
    w = torch.randn(50, 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9), generator=gen)
    labels[1, :4] = -100
    plain = F.cross_entropy((h @ w.T).reshape(-1, 50), labels.reshape(-1))
    chunked = chunked_cross_entropy(h, w, labels, chunk_size=4, vocab_chunk=16)
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
    for got, want in zip(_grads(chunked, h, w), _grads(plain, h, w)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_reduction_none_gives_per_token_losses_with_zero_at_ignored():
    h, w, labels = _problem(n_tokens=6)
    labels[2] = -100
    plain = F.cross_entropy(h @ w.T, labels, reduction="none")
    chunked = chunked_cross_entropy(h, w, labels, chunk_size=4, reduction="none")
    assert chunked.shape == (6,)
    assert chunked[2].item() == 0.0
    torch.testing.assert_close(chunked.double(), plain, atol=1e-5, rtol=1e-5)
    weights = torch.arange(6, dtype=torch.float64)  # a non-uniform upstream gradient
    for got, want in zip(_grads((chunked.double() * weights).sum(), h, w), _grads((plain * weights).sum(), h, w)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_all_ignored_mean_is_zero_with_zero_gradients_where_torch_gives_nan():
    h, w, labels = _problem(n_tokens=5)
    labels[:] = -100
    assert math.isnan(F.cross_entropy(h @ w.T, labels).item())  # why we deliberately differ
    loss = chunked_cross_entropy(h, w, labels, chunk_size=2)
    assert loss.item() == 0.0
    grad_h, grad_w = _grads(loss, h, w)
    assert torch.count_nonzero(grad_h) == 0 and torch.count_nonzero(grad_w) == 0
    total = chunked_cross_entropy(h, w, labels, reduction="sum")
    assert total.item() == F.cross_entropy(h @ w.T, labels, reduction="sum").item() == 0.0


def test_hand_computed_cross_entropy():
    # Two-word vocabulary, one token: logits = h @ W.T = [1, 0], label 0 -> loss = log(1 + e^-1).
    h = torch.tensor([[1.0]])
    w = torch.tensor([[1.0], [0.0]])
    loss = chunked_cross_entropy(h, w, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-7)


def test_frozen_head_gets_no_gradient_and_hidden_gradient_is_still_right():
    h, w, labels = _problem()
    frozen = w.detach()
    plain = F.cross_entropy(h @ frozen.T, labels)
    chunked = chunked_cross_entropy(h, frozen, labels, chunk_size=7)
    (got,) = _grads(chunked, h)
    (want,) = _grads(plain, h)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bfloat16_inputs_stay_close_to_float32_reference():
    h, w, labels = _problem(dtype=torch.float32)
    ref = F.cross_entropy(h @ w.T, labels)
    low = chunked_cross_entropy(h.detach().bfloat16().requires_grad_(), w.detach().bfloat16(), labels, chunk_size=8)
    assert low.dtype == torch.float32
    assert abs(low.item() - ref.item()) < 0.05 * abs(ref.item())


def test_fused_linear_cross_entropy_on_cpu_is_the_chunked_path():
    h, w, labels = _problem()
    fused = fused_linear_cross_entropy(h, w, labels)
    assert fused.item() == chunked_cross_entropy(h, w, labels).item()


def test_sequence_logprobs_sum_masked_token_logprobs_per_sequence():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(3, 11, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (3, 11), generator=gen)
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1, [1, 2, 9]] = True  # non-contiguous answer tokens
    # sequence 2 has no answer tokens: its sum is 0
    full = torch.log_softmax(h @ w.T, dim=-1).gather(-1, labels[..., None]).squeeze(-1)
    want = (full * mask).sum(-1)
    got = sequence_logprobs(h, w, labels, mask, chunk_size=3, vocab_chunk=16)
    torch.testing.assert_close(got.total.double(), want, atol=1e-5, rtol=1e-5)
    assert got.n_tokens.tolist() == [6, 3, 0]
    upstream = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    for g_got, g_want in zip(_grads((got.total.double() * upstream).sum(), h, w), _grads((want * upstream).sum(), h, w)):
        torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)


def test_label_logprobs_rejects_misshapen_input():
    with pytest.raises(ValueError, match="expected hidden"):
        label_logprobs(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long))


def test_final_hidden_states_feed_the_same_loss_as_the_models_logits(tiny_llava_dir):
    from transformers import LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_llava_dir).float()
    input_ids = torch.randint(10, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    hidden, weight = final_hidden_states(model, input_ids=input_ids, attention_mask=attention_mask)
    assert hidden.shape == (2, 12, model.config.text_config.hidden_size)
    assert weight is model.lm_head.weight
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    plain = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))
    chunked = chunked_cross_entropy(hidden[:, :-1], weight, input_ids[:, 1:], chunk_size=5)
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
