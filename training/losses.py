"""Language-model losses computed from final hidden states without materialising the full logits.

At VARCO's vocabulary (151,936) the logits of one 9,216-token sample are 5.6 GB in float32, more than the
model they come from. Every loss here therefore takes the final hidden states and the ``lm_head`` weight
and works chunk by chunk over tokens (and, optionally, over the vocabulary):

- ``chunked_cross_entropy``: the SFT loss (stages 1-3, and the SFT term of DPO+SFT);
- ``sequence_logprobs``: per-sequence sums of answer-token log-probabilities (DPO's policy and reference);
- ``fused_linear_cross_entropy``: Liger's fused Triton kernel on CUDA, the chunked path everywhere else;
- ``final_hidden_states``: runs a ``LlavaOnevisionForConditionalGeneration`` through its *root* forward
  (so FSDP2's hooks gather the root's parameters) while asking for zero logits, and returns the last,
  normed hidden states together with the ``lm_head`` weight.

Alignment convention: ``hidden[..., t, :]`` is scored against ``labels[..., t]``; callers shift
(``hidden[:, :-1]`` against ``input_ids[:, 1:]``) before calling, exactly as for ``F.cross_entropy``.

The chunked kernel is a custom ``autograd.Function`` that saves only the inputs and one float per token
(the log-sum-exp) and recomputes each chunk's logits in backward, turning them into the softmax gradient
in place. The alternative, ``torch.utils.checkpoint`` per chunk, keeps autograd's own logits, softmax and
gradient buffers alive during each chunk's backward: at the same 1024-token chunk it peaked 2.1x higher
(``benchmarks/train_losses_memory.py``, figures in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100
# 1,024 tokens x 32,768 vocabulary entries = 128 MiB of float32 logits per chunk: small next to a
# 1.7B model's activations, large enough that the matmuls stay efficient.
DEFAULT_TOKEN_CHUNK = 1024
DEFAULT_VOCAB_CHUNK = 32768


def _vocab_ranges(vocab: int, vocab_chunk: int | None) -> list[tuple[int, int]]:
    step = vocab if not vocab_chunk or vocab_chunk >= vocab else vocab_chunk
    return [(start, min(start + step, vocab)) for start in range(0, vocab, step)]


class _ChunkedLabelLogprob(torch.autograd.Function):
    """log p(label_i | hidden_i) for every row i of ``hidden`` (N, H), float32, shape (N,).

    Forward keeps a running log-sum-exp over vocabulary chunks; backward recomputes each
    (token chunk x vocab chunk) block of logits, so at most one block exists at any time.
    d logp_i / d logit_ij = 1[j = y_i] - softmax_ij: the one-hot part is a gather of W rows (no logits
    needed), the softmax part is recomputed per block.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, token_chunk: int, vocab_chunk: int | None):
        n_tokens = hidden.shape[0]
        vocab = weight.shape[0]
        lse = torch.empty(n_tokens, dtype=torch.float32, device=hidden.device)
        target_logit = torch.empty(n_tokens, dtype=torch.float32, device=hidden.device)
        for start in range(0, n_tokens, token_chunk):
            stop = min(start + token_chunk, n_tokens)
            h = hidden[start:stop]
            running = None
            for v0, v1 in _vocab_ranges(vocab, vocab_chunk):
                block_lse = torch.logsumexp((h @ weight[v0:v1].T).float(), dim=-1)
                running = block_lse if running is None else torch.logaddexp(running, block_lse)
            lse[start:stop] = running
            # The label's logit as a row-wise dot product: no need to find it inside a logits block.
            target_logit[start:stop] = (h * weight[labels[start:stop]]).float().sum(-1)
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.token_chunk = token_chunk
        ctx.vocab_chunk = vocab_chunk
        return target_logit - lse

    @staticmethod
    def backward(ctx, grad_logprob):
        hidden, weight, labels, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        # Accumulated in the weight's own dtype (as Liger does): a float32 copy of a 151,936 x 5,120
        # head would cost 3 GB for the 14B model.
        grad_weight = torch.zeros_like(weight) if need_weight else None
        if not (need_hidden or need_weight) or hidden.shape[0] == 0:
            return grad_hidden, grad_weight, None, None, None
        grad_logprob = grad_logprob.float()
        vocab = weight.shape[0]
        for start in range(0, hidden.shape[0], ctx.token_chunk):
            stop = min(start + ctx.token_chunk, hidden.shape[0])
            h = hidden[start:stop]
            g = grad_logprob[start:stop]
            chunk_lse = lse[start:stop, None]
            grad_h = torch.zeros(h.shape, dtype=torch.float32, device=h.device) if need_hidden else None
            for v0, v1 in _vocab_ranges(vocab, ctx.vocab_chunk):
                w = weight[v0:v1]
                # -g_i * softmax_ij, built in place in the logits buffer.
                block = (h @ w.T).float()
                block.sub_(chunk_lse).exp_().mul_(-g[:, None])
                block = block.to(hidden.dtype)
                # In-place matmul-accumulate where the dtypes allow: a (vocab chunk x H) temporary for
                # the weight gradient would cost as much as the logits block itself.
                if need_hidden:
                    if block.dtype == torch.float32 and w.dtype == torch.float32:
                        grad_h.addmm_(block, w)
                    else:
                        grad_h.add_((block @ w).float())
                if need_weight:
                    if block.dtype == grad_weight.dtype and h.dtype == grad_weight.dtype:
                        grad_weight[v0:v1].addmm_(block.T, h)
                    else:
                        grad_weight[v0:v1].add_((block.T @ h).to(grad_weight.dtype))
                del block
            y = labels[start:stop]
            if need_hidden:
                grad_h.add_(g[:, None] * weight[y].float())
                grad_hidden[start:stop] = grad_h.to(hidden.dtype)
            if need_weight:
                grad_weight.index_add_(0, y, (g[:, None] * h.float()).to(weight.dtype))
        return grad_hidden, grad_weight, None, None, None


def label_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    token_chunk: int = DEFAULT_TOKEN_CHUNK,
    vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """log p(labels_i) for rows of ``hidden`` (N, H) against ``lm_head_weight`` (V, H); float32 (N,)."""
    if hidden.ndim != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden (N, H) and labels (N,), got {tuple(hidden.shape)} and {tuple(labels.shape)}")
    if token_chunk < 1:
        raise ValueError(f"token_chunk must be >= 1, got {token_chunk}")
    return _ChunkedLabelLogprob.apply(hidden, lm_head_weight, labels, token_chunk, vocab_chunk)


def _select_rows(hidden: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``hidden`` (flattened to (N, H)) where ``keep`` (any shape with N elements) is true.

    Only scored tokens reach the vocabulary projection: in a VLM sample most positions are image and
    prompt tokens whose logits would be computed only to be masked out.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    index = keep.reshape(-1).nonzero().squeeze(-1)
    return flat_hidden.index_select(0, index), index


def chunked_cross_entropy(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = DEFAULT_TOKEN_CHUNK,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ lm_head_weight.T, labels)`` without the full logits.

    ``hidden`` is (..., H), ``labels`` has the leading shape of ``hidden``. ``reduction`` is "mean" (over
    tokens whose label is not ``ignore_index``), "sum", or "none" (per-token losses, 0 at ignored tokens).
    Differs from torch in one deliberate place: "mean" over a batch with every label ignored returns 0
    with zero gradients instead of NaN, because under gradient accumulation a micro-batch whose answers
    were all truncated away must not poison the accumulated step.
    The result is float32 whatever the input dtype.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape)}")
    scored = labels != ignore_index
    rows, index = _select_rows(hidden, scored)
    token_loss = -label_logprobs(rows, lm_head_weight, labels.reshape(-1)[index], chunk_size, vocab_chunk)
    if reduction == "none":
        full = torch.zeros(labels.numel(), dtype=torch.float32, device=hidden.device)
        return full.index_copy(0, index, token_loss).view(labels.shape)
    total = token_loss.sum()
    if reduction == "sum":
        return total
    return total / max(int(index.numel()), 1)


def _liger_available_for(hidden: torch.Tensor) -> bool:
    if not hidden.is_cuda:
        return False
    try:
        import liger_kernel.transformers  # noqa: F401  (the `train` extra; needs Triton and a GPU)
    except Exception:  # noqa: BLE001 - ImportError, or Triton failing to find a driver
        return False
    return True


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    chunk_size: int = DEFAULT_TOKEN_CHUNK,
    use_liger: bool | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ lm_head_weight.T`` against ``labels``: Liger's fused kernel when CUDA,
    Triton and liger-kernel are present (``use_liger=None`` decides automatically), else the chunked path."""
    if use_liger is None:
        use_liger = _liger_available_for(hidden)
    if not use_liger:
        return chunked_cross_entropy(hidden, lm_head_weight, labels, chunk_size, ignore_index, reduction)
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss_fn = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction=reduction)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    loss = loss_fn(lm_head_weight, flat_hidden, labels.reshape(-1))
    loss = loss[0] if isinstance(loss, tuple) else loss
    return loss.view(labels.shape) if reduction == "none" else loss


@dataclass(frozen=True)
class SequenceLogprobs:
    """Per-sequence sums of answer-token log-probabilities and how many tokens were summed."""

    total: torch.Tensor  # (B,) float32
    n_tokens: torch.Tensor  # (B,) int64


def sequence_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    chunk_size: int = DEFAULT_TOKEN_CHUNK,
    vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
) -> SequenceLogprobs:
    """Sum over positions where ``mask`` is true of log p(labels[b, t] | hidden[b, t]), per sequence b.

    ``hidden`` (B, T, H), ``labels`` and ``mask`` (B, T). Only masked-in positions are projected onto the
    vocabulary, chunk by chunk; the backward pass recomputes each chunk.
    """
    if hidden.ndim != 3 or labels.shape != hidden.shape[:2] or mask.shape != labels.shape:
        raise ValueError(
            f"expected hidden (B, T, H), labels and mask (B, T); got {tuple(hidden.shape)}, "
            f"{tuple(labels.shape)}, {tuple(mask.shape)}"
        )
    mask = mask.bool()
    rows, index = _select_rows(hidden, mask)
    token_logprob = label_logprobs(rows, lm_head_weight, labels.reshape(-1)[index], chunk_size, vocab_chunk)
    batch, length = labels.shape
    sequence_of_row = torch.div(index, length, rounding_mode="floor")
    total = torch.zeros(batch, dtype=torch.float32, device=hidden.device).index_add(0, sequence_of_row, token_logprob)
    return SequenceLogprobs(total=total, n_tokens=mask.sum(-1))


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(tensor, DTensor)


def lm_head_weight_of(model: Any) -> torch.Tensor:
    """The output projection weight (V, H), usable as a plain tensor.

    Under FSDP2 the root's parameters are unsharded plain tensors between the root forward and
    backward (the root is not resharded after forward); a DTensor here means the caller read the weight
    outside that window, which would silently skip FSDP's gradient reduction, so it is refused.
    """
    weight = model.get_output_embeddings().weight
    if _is_dtensor(weight):
        raise RuntimeError(
            "lm_head.weight is a sharded DTensor: read it right after the model's root forward "
            "(final_hidden_states does), not before it or after an explicit reshard"
        )
    return weight


def _is_fsdp_sharded(model: Any) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def _check_images_on_every_rank_or_none(has_images: bool, device: torch.device | None) -> None:
    """Under FSDP2 every rank must run the same sharded modules in the same order: a micro-batch
    without images skips the vision tower's all-gathers while another rank runs them, and the run
    hangs or dies in gloo/NCCL. Detect it (one tiny all-reduce) and say so instead."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    count = torch.tensor([float(has_images)], device=on)
    dist.all_reduce(count)
    if 0 < count.item() < dist.get_world_size():
        from training.data import DataError

        raise DataError(
            f"rank {dist.get_rank()}: {int(count.item())} of {dist.get_world_size()} ranks have images in this "
            "micro-batch; under FSDP every micro-batch must have images on all ranks or on none "
            "(keep text-only samples in a separate data file/run)"
        )


def final_hidden_states(model: Any, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` (a LlavaOnevisionForConditionalGeneration, possibly FSDP2-wrapped) and return
    (last normed hidden states (B, T, H), lm_head weight (V, H)) without computing any logits.

    Going through the root forward (not ``model.model``) is what lets FSDP2 all-gather the root-level
    parameters (embeddings, norm, projector, lm_head). ``logits_to_keep`` = an empty index keeps the
    (B, 0, V) logits empty; in transformers 5.x ``hidden_states[-1]`` is the post-norm last hidden state,
    i.e. exactly what ``lm_head`` would have been applied to.
    """
    inputs.pop("labels", None)
    device = inputs["input_ids"].device if "input_ids" in inputs else None
    if _is_fsdp_sharded(model):
        _check_images_on_every_rank_or_none(inputs.get("pixel_values") is not None, device)
    with warnings.catch_warnings():
        # FSDP2 warns when a wrapped module returns a view tensor, since an in-place op on it would skip
        # the all-gather in backward. The view here is hidden_states[0] (the embeddings after the image
        # features are scattered in), which we discard; nothing returned is modified in place, only
        # hidden_states[-1] is read (and sliced out of place by the losses). So the warning does not apply
        # (and 2-process FSDP matches single-process training, tests/training/test_fsdp.py).
        warnings.filterwarnings("ignore", message=FSDP_VIEW_WARNING, category=UserWarning)
        outputs = model(
            **inputs,
            logits_to_keep=torch.empty(0, dtype=torch.long, device=device),
            output_hidden_states=True,
            use_cache=False,
        )
    return outputs.hidden_states[-1], lm_head_weight_of(model)


# torch/distributed/fsdp/_fully_shard/_fsdp_state.py, _register_pre_backward_hook (torch 2.13/2.14).
FSDP_VIEW_WARNING = r"FSDP2-wrapped module \(FSDPLlavaOnevisionForConditionalGeneration\) returned a view tensor"
