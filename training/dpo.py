"""Stage 4: direct preference optimisation (sigmoid DPO, optionally + SFT on the chosen answers).

Data: JSON lines, one preference pair per line::

    {"images": ["page.png"], "prompt": [{"from": "human", "value": "<image>\\n<ocr>"}],
     "chosen": "<char>TOTAL</char><bbox>...</bbox>", "rejected": "<char>T0TAL</char><bbox>...</bbox>"}

``prompt`` is a conversation in the LLaVA style of ``training/data.py`` (or a plain string: one user turn)
ending with a user turn; ``chosen``/``rejected`` are the two candidate assistant answers (a string, or a
one-turn list). Image paths are relative to the JSON-lines file. Bad lines are reported as ``file:line``.

Objective (TRL's ``DPOTrainer`` sigmoid loss, beta 0.1): with log-probabilities summed over the answer
tokens (the final assistant turn, end-of-turn token included) for the policy (pc, pr) and the reference
(rc, rr), ``loss = mean(-logsigmoid(beta * ((pc - rc) - (pr - rr))))``; rewards are ``beta * (p - r)``.
``sft_weight`` adds ``sft_weight * (mean NLL per chosen answer token)`` (the paper's DPO+SFT variant).
Log-probabilities come from ``training.losses.sequence_logprobs`` on the final hidden states, chunked over
tokens and vocabulary, so the batch x length x 151,936 logits never exist.

Reference model: ``LiveReference`` keeps a frozen copy (no grad) on a chosen device, CPU by default;
``CachedReference`` (``--precompute-ref``) runs the initial model once over the data set before training
and caches the log-probabilities in a file keyed by a fingerprint of the data, the model and the settings
that change them, so a rerun reuses the cache and a changed input never does.

``DPOObjective`` plugs into the shared loop of ``training.train`` (``units(batch)`` = pairs;
``objective(model, batch)`` -> (sum of per-pair losses, metric sums)); ``run_dpo`` drives it with that
loop's optimiser, constant schedule, FSDP2, activation checkpointing and resumable checkpoints, and
records per-step rewards, margins and accuracy in ``OUTPUT/dpo_metrics.jsonl``. ``--dpo-loss liger``
swaps in Liger's fused DPO loss (live reference only): faster on CUDA, but it projects one pair's full
logits at a time, so the default chunked path is the low-memory one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.data import (
    IGNORE_INDEX,
    BadSampleBudget,
    Conversation,
    ConversationEncoder,
    DataError,
    EncodedSample,
    collate,
    next_index,
    parse_record,
    read_jsonl_samples,
)
from training.losses import (
    DEFAULT_TOKEN_CHUNK,
    DEFAULT_VOCAB_CHUNK,
    final_hidden_states,
    sequence_logprobs,
)
from training.params import ConfigError

log = logging.getLogger("training.dpo")

DEFAULT_BETA = 0.1


# --- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    where: str  # "file:line"
    chosen: Conversation  # prompt + chosen answer
    rejected: Conversation  # prompt + rejected answer


def _answer_text(value: Any, key: str, where: str) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        turn = value[0]
        role = turn.get("from", turn.get("role"))
        if role not in ("gpt", "assistant"):
            raise DataError(f"{where}: '{key}' must be an assistant turn, got role {role!r}")
        value = turn.get("value", turn.get("content"))
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be a non-empty answer string")
    return value


def parse_preference_record(record: Any, base_dir: Path, where: str, max_images: int = 12) -> PreferencePair:
    """Validate one JSON record; raises DataError('file:line: reason')."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object")
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise DataError(f"{where}: missing '{key}'")
    prompt = record["prompt"]
    if isinstance(prompt, str):
        prompt = [{"from": "human", "value": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise DataError(f"{where}: 'prompt' must be a non-empty list of turns or a string")
    last = prompt[-1]
    if not isinstance(last, dict) or last.get("from", last.get("role")) not in ("human", "user"):
        raise DataError(f"{where}: 'prompt' must end with a user turn")
    chosen = _answer_text(record["chosen"], "chosen", where)
    rejected = _answer_text(record["rejected"], "rejected", where)
    if chosen == rejected:
        raise DataError(f"{where}: 'chosen' and 'rejected' are identical (nothing to prefer)")
    images = record.get("images", record.get("image", []))

    def conversation(answer: str) -> Conversation:
        return parse_record(
            {"images": images, "conversations": [*prompt, {"from": "gpt", "value": answer}]}, base_dir, where, max_images
        )

    return PreferencePair(where=where, chosen=conversation(chosen), rejected=conversation(rejected))


def read_preference_pairs(paths: Sequence[str | Path], budget: BadSampleBudget, max_images: int = 12) -> list[PreferencePair]:
    """Every valid pair of the JSON-lines files; bad lines and missing images are skipped via ``budget``."""
    return read_jsonl_samples(
        paths, budget, lambda record, base, where: parse_preference_record(record, base, where, max_images),
        lambda pair: pair.chosen.images, what="preference pairs",
    )


def final_answer_only(labels: torch.Tensor) -> torch.Tensor:
    """Keep only the last contiguous run of labelled tokens (the final assistant answer and its
    end-of-turn); earlier assistant turns of a multi-turn prompt are context, not the completion."""
    scored = (labels != IGNORE_INDEX).nonzero().squeeze(-1)
    if scored.numel() == 0:
        return labels
    end = int(scored[-1])
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    out = torch.full_like(labels, IGNORE_INDEX)
    out[start : end + 1] = labels[start : end + 1]
    return out


@dataclass
class EncodedPair:
    index: int  # position in the data set (the reference cache's key)
    where: str
    chosen: EncodedSample
    rejected: EncodedSample


def encode_pair(encoder: ConversationEncoder, pair: PreferencePair, index: int) -> EncodedPair | None:
    """Both sides encoded with the SFT encoder (same template, masks and overlong rule); None if either
    side is skipped (bad image, overlong) so a pair is always used whole or not at all."""
    chosen = encoder.encode(pair.chosen)
    if chosen is None:
        return None
    rejected = encoder.encode(pair.rejected)
    if rejected is None:
        return None
    for sample in (chosen, rejected):
        sample.labels = final_answer_only(sample.labels)
        if sample.num_target_tokens == 0:
            if encoder.notes.first(pair.where, "dropped: no answer token left after truncation"):
                log.warning("%s: no answer token left after truncation (pair dropped)", pair.where)
            return None
    return EncodedPair(index, pair.where, chosen, rejected)


def collate_pairs(pairs: Sequence[EncodedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2P sequences, chosen answers first then rejected (one forward for both, as TRL's
    concatenated forward), plus ``pair_index`` (P,) for the reference cache."""
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_token_id)
    batch["pair_index"] = torch.tensor([p.index for p in pairs], dtype=torch.long)
    return batch


class PairBatches:
    """The DPO batch source of ``training.train.run_training``: ``micro_batch_size`` encodable pairs at a
    time, drawn from a rank-sharded ``SampleStream`` over pairs (its state is what checkpoints save)."""

    def __init__(self, pairs: Sequence[PreferencePair], encoder: ConversationEncoder, stream, micro_batch_size: int, pad_token_id: int):
        self.pairs, self.encoder, self.stream = pairs, encoder, stream
        self.micro_batch_size, self.pad_token_id = micro_batch_size, pad_token_id

    def encoded(self, index: int) -> EncodedPair | None:
        return encode_pair(self.encoder, self.pairs[index], index)

    def next_batch(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        chosen: list[EncodedPair] = []
        misses = 0
        while len(chosen) < self.micro_batch_size:
            pair = self.encoded(next_index(self.stream, self.encoder.notes))
            if pair is None:
                misses += 1
                if misses > 2 * len(self.pairs):  # every pair dropped (overlong...): say so, don't spin
                    raise DataError(f"no usable preference pair: {misses} drawn in a row were dropped (see the log)")
                continue
            chosen.append(pair)
        return collate_pairs(chosen, self.pad_token_id), [p.where for p in chosen]

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


# --- objective -----------------------------------------------------------------------------------

_NOT_MODEL_INPUTS = ("labels", "pair_index")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in _NOT_MODEL_INPUTS}


def answer_logprobs(
    model: Any,
    batch: dict[str, torch.Tensor],
    chunk_size: int = DEFAULT_TOKEN_CHUNK,
    vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
):
    """Per-sequence summed log-probabilities of the labelled tokens, from hidden states (no logits)."""
    hidden, weight = final_hidden_states(model, **model_inputs(batch))
    labels = batch["labels"][:, 1:].to(hidden.device)
    mask = labels != IGNORE_INDEX
    return sequence_logprobs(hidden[:, :-1], weight, labels.clamp_min(0), mask, chunk_size, vocab_chunk)


@dataclass(frozen=True)
class DPOTerms:
    losses: torch.Tensor  # (P,) per-pair sigmoid DPO loss
    chosen_rewards: torch.Tensor  # (P,) beta * (pc - rc), detached
    rejected_rewards: torch.Tensor  # (P,) beta * (pr - rr), detached


def sigmoid_dpo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = DEFAULT_BETA,
) -> DPOTerms:
    """TRL's sigmoid DPO: -logsigmoid(beta * ((pc - rc) - (pr - rr))) per pair."""
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio))
    return DPOTerms(losses, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach())


class DPOObjective:
    """The DPO (+SFT) objective in ``training.train``'s protocol: ``units(batch)`` is the number of pairs;
    ``objective(model, batch)`` returns (sum over the batch's pairs of the per-pair loss, metric sums),
    and the loop divides by the pairs of the whole global batch.

    Per-pair loss = sigmoid DPO + ``sft_weight`` x the chosen answer's mean per-token NLL (so the SFT term
    weighs every pair alike, like the DPO term, and does not depend on how pairs are split into batches).
    Metric sums are per pair, named as TRL logs them; divided by the pair count they are means.
    """

    def __init__(self, reference, beta: float = DEFAULT_BETA, sft_weight: float = 0.0,
                 chunk_size: int = DEFAULT_TOKEN_CHUNK, vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
                 use_liger: bool = False):
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {sft_weight}")
        if use_liger and (sft_weight > 0 or not isinstance(reference, LiveReference)):
            # Liger needs the reference's hidden states (not cached log-probs), and normalises its NLL term
            # over the micro-batch's tokens, which would change the meaning of --sft-weight.
            raise ValueError("the Liger DPO loss needs a live reference and no --sft-weight")
        self.reference, self.beta, self.sft_weight = reference, beta, sft_weight
        self.chunk_size, self.vocab_chunk = chunk_size, vocab_chunk
        self.use_liger = use_liger
        self.recorder: StepMetricsRecorder | None = None

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["pair_index"].numel())

    def __call__(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.use_liger:
            return self._liger_call(model, batch)
        pairs = self.units(batch)
        policy = answer_logprobs(model, batch, self.chunk_size, self.vocab_chunk)
        ref_chosen, ref_rejected = self.reference.logprobs(batch)
        device = policy.total.device
        terms = sigmoid_dpo(policy.total[:pairs], policy.total[pairs:], ref_chosen.to(device), ref_rejected.to(device), self.beta)
        loss_sum = terms.losses.sum()
        margins = terms.chosen_rewards - terms.rejected_rewards
        metrics = {
            "loss/dpo": loss_sum.item(),
            "rewards/chosen": terms.chosen_rewards.sum().item(),
            "rewards/rejected": terms.rejected_rewards.sum().item(),
            "rewards/margins": margins.sum().item(),
            "rewards/accuracies": (margins > 0).float().sum().item(),
            "logps/chosen": policy.total[:pairs].detach().sum().item(),
            "logps/rejected": policy.total[pairs:].detach().sum().item(),
        }
        if self.sft_weight > 0:
            chosen_nll = -policy.total[:pairs] / policy.n_tokens[:pairs].clamp_min(1).to(device)
            sft_sum = chosen_nll.sum()
            loss_sum = loss_sum + self.sft_weight * sft_sum
            metrics["loss/sft"] = sft_sum.item()
        if self.recorder is not None:
            self.recorder.add(metrics, pairs)
        return loss_sum, metrics

    def _liger_call(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.units(batch)
        hidden, weight = final_hidden_states(model, **model_inputs(batch))
        ref_hidden, ref_weight = self.reference.hidden_states(batch)
        labels = batch["labels"][:, 1:].to(hidden.device)
        loss_mean, aux = liger_dpo_loss(hidden[:, :-1], weight, ref_hidden[:, :-1].to(hidden.device),
                                        ref_weight.to(hidden.device), labels, self.beta)
        chosen_logps, rejected_logps = aux[0], aux[1]
        chosen_rewards, rejected_rewards = aux[-2], aux[-1]
        margins = chosen_rewards - rejected_rewards
        loss_sum = loss_mean * pairs
        metrics = {
            "loss/dpo": loss_sum.item(),
            "rewards/chosen": chosen_rewards.sum().item(),
            "rewards/rejected": rejected_rewards.sum().item(),
            "rewards/margins": margins.sum().item(),
            "rewards/accuracies": (margins > 0).float().sum().item(),
            "logps/chosen": chosen_logps.detach().sum().item(),
            "logps/rejected": rejected_logps.detach().sum().item(),
        }
        if self.recorder is not None:
            self.recorder.add(metrics, pairs)
        return loss_sum, metrics


class StepMetricsRecorder:
    """Per-step DPO metrics (means over the global batch's pairs) appended to a JSON-lines file.

    The shared loop logs the loss; rewards, margins and accuracy are DPO's own, so the objective records
    them: every ``accumulation`` calls make one optimizer step; sums are all-reduced across ranks (every
    rank calls the objective equally often, so the collective is safe) and rank 0 writes the record.
    """

    def __init__(self, path: Path, accumulation: int, first_step: int = 0):
        self.path, self.accumulation, self.step = Path(path), accumulation, first_step
        self._sums: dict[str, float] = {}
        self._pairs = 0
        self._calls = 0

    def add(self, metrics: dict[str, float], pairs: int) -> None:
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._pairs += pairs
        self._calls += 1
        if self._calls == self.accumulation:
            self._flush()

    def _flush(self) -> None:
        keys = sorted(self._sums)
        values = _all_reduce_sum(torch.tensor([self._sums[k] for k in keys] + [float(self._pairs)], dtype=torch.float64))
        rank, _ = _distributed()
        self.step += 1
        pairs = values[-1].item()
        record = {"step": self.step, "pairs": int(pairs), **{k: values[i].item() / pairs for i, k in enumerate(keys)}}
        if rank == 0:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        log.info("dpo step %d: margin %.4f accuracy %.3f", self.step, record["rewards/margins"], record["rewards/accuracies"])
        self._sums, self._pairs, self._calls = {}, 0, 0


# --- reference model -----------------------------------------------------------------------------


class LiveReference:
    """A frozen copy of the initial policy, evaluated under no-grad on ``device`` (CPU by default, so it
    costs host memory, not accelerator memory)."""

    def __init__(self, model: Any, device: str | torch.device = "cpu",
                 chunk_size: int = DEFAULT_TOKEN_CHUNK, vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK):
        self.model = copy.deepcopy(model).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.chunk_size, self.vocab_chunk = chunk_size, vocab_chunk

    @torch.no_grad()
    def hidden_states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(final hidden states, lm_head weight) of the reference, for Liger's fused DPO loss."""
        local = {k: v.to(self.device) for k, v in model_inputs(batch).items()}
        return final_hidden_states(self.model, **local)

    @torch.no_grad()
    def logprobs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        local = {k: v.to(self.device) for k, v in batch.items()}
        pairs = batch["pair_index"].numel()
        total = answer_logprobs(self.model, local, self.chunk_size, self.vocab_chunk).total
        return total[:pairs], total[pairs:]


class CachedReference:
    """Reference log-probabilities looked up by pair index (NaN marks pairs that were never encodable)."""

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor):
        self.chosen, self.rejected = chosen, rejected

    def logprobs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        index = batch["pair_index"].cpu()
        chosen, rejected = self.chosen[index], self.rejected[index]
        if torch.isnan(chosen).any() or torch.isnan(rejected).any():
            raise RuntimeError(f"reference cache has no value for pairs {index.tolist()}: cache and data disagree")
        return chosen, rejected


def _sampled_digest(path: Path, blocks: int = 16, block_size: int = 1 << 16) -> str:
    """sha256 of a file's size and ``blocks`` evenly spaced 64 KiB blocks: reads ~1 MiB of a multi-GB
    weight shard, yet any retrained checkpoint differs in every block."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        if size <= blocks * block_size:
            digest.update(handle.read())
        else:
            for i in range(blocks):
                handle.seek((size - block_size) * i // (blocks - 1))
                digest.update(handle.read(block_size))
    return digest.hexdigest()


def reference_fingerprint(model_dir: str | Path, data_paths: Sequence[str | Path], pairs: Sequence[PreferencePair],
                          settings: dict[str, Any]) -> str:
    """Fingerprint of what the reference log-probabilities depend on: the model folder's config and
    weight files, the data files and the images they name, and the encoding settings."""
    digest = hashlib.sha256(b"varco-dpo-reference-v1")
    model_dir = Path(model_dir)
    for path in sorted(model_dir.iterdir()):
        if path.suffix in (".safetensors", ".json", ".jinja", ".model", ".txt") and path.is_file():
            digest.update(path.name.encode())
            digest.update(_sampled_digest(path).encode())
    for path in data_paths:
        digest.update(hashlib.sha256(Path(path).read_bytes()).hexdigest().encode())
    for image in sorted({str(p) for pair in pairs for p in pair.chosen.images}):
        digest.update(image.encode())
        digest.update(_sampled_digest(Path(image)).encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a small CPU tensor over ranks (through the GPU under NCCL, which cannot reduce CPU tensors)."""
    _, world = _distributed()
    if world == 1:
        return values
    on = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else values.device
    reduced = values.to(on)
    torch.distributed.all_reduce(reduced)
    return reduced.to(values.device)


@torch.no_grad()
def compute_reference_logprobs(model: Any, encoded_pair_at, n_pairs: int, pad_token_id: int,
                               chunk_size: int = DEFAULT_TOKEN_CHUNK, vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
                               device: str | torch.device = "cpu") -> CachedReference:
    """Run ``model`` once over every pair (``encoded_pair_at(i) -> EncodedPair | None``), one pair per
    forward; under torch.distributed rank r takes pairs r, r+w, ... and the results are summed across ranks."""
    rank, world = _distributed()
    chosen = torch.full((n_pairs,), float("nan"), dtype=torch.float64)
    rejected = torch.full((n_pairs,), float("nan"), dtype=torch.float64)
    was_training = model.training
    model.eval()
    for i in range(rank, n_pairs, world):
        pair = encoded_pair_at(i)
        if pair is None:
            continue
        batch = {k: v.to(device) for k, v in collate_pairs([pair], pad_token_id).items()}
        total = answer_logprobs(model, batch, chunk_size, vocab_chunk).total
        chosen[i], rejected[i] = float(total[0]), float(total[1])
    model.train(was_training)
    if world > 1:
        # NaN-free sum: each pair was computed by exactly one rank; the others contribute zeros.
        for values in (chosen, rejected):
            total = _all_reduce_sum(torch.nan_to_num(values, nan=0.0))
            seen = _all_reduce_sum((~torch.isnan(values)).double())
            values.copy_(torch.where(seen > 0, total, torch.full_like(total, float("nan"))))
    return CachedReference(chosen.float(), rejected.float())


def load_or_compute_reference_cache(cache_path: Path, fingerprint: str, compute) -> CachedReference:
    """Reuse ``cache_path`` when it holds ``fingerprint``; otherwise ``compute()`` and write it atomically.
    Under torch.distributed the cache is reused only if every rank can read it, since ``compute`` is
    collective (ranks split the pairs)."""
    saved = None
    if cache_path.is_file():
        try:
            saved = torch.load(cache_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: recompute rather than trust it
            log.warning("%s: unreadable reference cache (%s); recomputing", cache_path, exc)
        if saved is not None and saved.get("fingerprint") != fingerprint:
            log.info("%s: fingerprint changed (data, model or settings differ); recomputing", cache_path)
            saved = None
    _, world = _distributed()
    usable_everywhere = _all_reduce_sum(torch.tensor([float(saved is not None)]))[0].item() == world
    if usable_everywhere:
        log.info("%s: reusing reference log-probabilities", cache_path)
        return CachedReference(saved["chosen"], saved["rejected"])
    reference = compute()
    rank, _ = _distributed()
    if rank == 0:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        torch.save({"fingerprint": fingerprint, "chosen": reference.chosen, "rejected": reference.rejected}, tmp)
        os.replace(tmp, cache_path)
    return reference


# --- Liger (CUDA) --------------------------------------------------------------------------------


def liger_dpo_loss(policy_hidden, policy_weight, ref_hidden, ref_weight, labels, beta: float = DEFAULT_BETA):
    """Liger's fused DPO loss over a concatenated (chosen; rejected) batch of aligned hidden states and
    labels: (mean loss over pairs, Liger's aux outputs: chosen/rejected log-probs, ..., chosen/rejected
    rewards). It projects one pair's full (length x vocab) logits per chunk, so at long contexts it uses
    more memory than ``sequence_logprobs``: opt-in (``--dpo-loss liger``) for speed on CUDA."""
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

    loss_fn = LigerFusedLinearDPOLoss(beta=beta, use_ref_model=True, compiled=policy_hidden.is_cuda)
    loss, aux = loss_fn(policy_weight, policy_hidden, labels, ref_input=ref_hidden, ref_weight=ref_weight)
    return loss, aux


# --- the run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPOSettings:
    """What stage 4 adds to the shared ``TrainConfig`` (which carries lr, batch, context, FSDP...)."""

    beta: float = DEFAULT_BETA
    sft_weight: float = 0.0
    precompute_ref: bool = False
    ref_device: str = "cpu"  # where the live reference copy lives and runs
    ref_cache: str | None = None  # default: OUTPUT/reference_logps.pt
    loss_impl: str = "chunked"  # or "liger": Liger's fused DPO loss (CUDA speed; live reference only)

    def validate(self) -> DPOSettings:
        if self.loss_impl not in ("chunked", "liger"):
            raise ConfigError(f"--dpo-loss must be chunked or liger (got {self.loss_impl!r})")
        if self.loss_impl == "liger" and (self.precompute_ref or self.sft_weight > 0):
            raise ConfigError("--dpo-loss liger needs the live reference and no --sft-weight")
        if not self.beta > 0:
            raise ConfigError(f"--beta must be positive (got {self.beta})")
        if self.sft_weight < 0:
            raise ConfigError(f"--sft-weight must be >= 0 (got {self.sft_weight})")
        return self


def _resumed_step(output_dir: str | Path) -> int:
    from training import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(output_dir)
    if latest is None:
        return 0
    return int(json.loads((latest / "trainer.json").read_text(encoding="utf-8"))["step"])


def run_dpo(cfg, settings: DPOSettings):
    """``varco-train dpo``: the shared loop of ``training.train`` with the DPO objective and pair batches.
    Returns its TrainResult; the final model is exported into ``cfg.output_dir``."""
    from training.data import SampleStream
    from training.train import (
        TrainingError,
        _write_run_base,
        export_final,
        init_distributed,
        load_model_and_processor,
        prepare_model,
        run_training,
        total_steps_for,
    )
    from varco_ocr import model_spec

    settings.validate()
    for what, value in (("model (--model)", cfg.model), ("data (--data)", cfg.data), ("output folder (-o)", cfg.output_dir)):
        if not value:
            raise TrainingError(f"no {what} given")
    # The data first: a bad file fails in a second, before any model is loaded.
    budget = BadSampleBudget(cfg.max_bad_samples, cfg.max_bad_fraction)
    pairs = read_preference_pairs(cfg.data, budget, cfg.max_images_per_sample)
    env = init_distributed()
    torch.manual_seed(cfg.seed)
    model, processor = load_model_and_processor(cfg.model, env)
    model_spec.configure_resolution(processor, model.config, cfg.max_grid, cfg.anyres)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    _write_run_base(cfg, model, processor, env)
    encoder = ConversationEncoder(processor, cfg.context_length, cfg.overlong, budget, cfg.fixed_resolution)
    stream = SampleStream(len(pairs), cfg.seed, env.rank, env.world_size)
    pad = processor.tokenizer.pad_token_id
    batches = PairBatches(pairs, encoder, stream, cfg.micro_batch_size, pad)
    chunk = cfg.ce_chunk_size

    if settings.precompute_ref:
        # The reference is the starting model: run it once, before it is sharded or trained, and keep
        # only its log-probabilities.
        model.to(env.device)
        fingerprint = reference_fingerprint(cfg.model, cfg.data, pairs, {
            "context_length": cfg.context_length, "overlong": cfg.overlong, "max_grid": cfg.max_grid,
            "anyres": cfg.anyres, "fixed_resolution": cfg.fixed_resolution,
            "max_images_per_sample": cfg.max_images_per_sample, "dtype": str(next(model.parameters()).dtype),
        })
        cache = Path(settings.ref_cache) if settings.ref_cache else Path(cfg.output_dir) / "reference_logps.pt"
        reference = load_or_compute_reference_cache(
            cache, fingerprint,
            lambda: compute_reference_logprobs(model, batches.encoded, len(pairs), pad, chunk, device=env.device),
        )
    else:
        reference = LiveReference(model, settings.ref_device, chunk)
    model = prepare_model(model, cfg, env)
    objective = DPOObjective(reference, settings.beta, settings.sft_weight, chunk, use_liger=settings.loss_impl == "liger")
    objective.recorder = StepMetricsRecorder(
        Path(cfg.output_dir) / "dpo_metrics.jsonl", cfg.accumulation_steps(env.world_size), _resumed_step(cfg.output_dir)
    )
    total = total_steps_for(cfg, len(pairs))
    if env.is_main:
        log.info("dpo: %d pairs, %d steps of %d pairs, beta %g, sft weight %g, reference %s", len(pairs), total,
                 cfg.global_batch_size, settings.beta, settings.sft_weight,
                 "precomputed" if settings.precompute_ref else f"live on {settings.ref_device}")
    result = run_training(cfg, model, processor, batches, objective, env, total)
    export_final(cfg, model, processor, env)
    return result
