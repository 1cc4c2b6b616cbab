"""DPO: data validation, the formula by hand, chunked == full-logits (loss and grads), reference cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from training.data import BadSampleBudget, ConversationEncoder, DataError
from training.dpo import (
    CachedReference,
    DPOObjective,
    LiveReference,
    collate_pairs,
    compute_reference_logprobs,
    encode_pair,
    final_answer_only,
    load_or_compute_reference_cache,
    parse_preference_record,
    read_preference_pairs,
    reference_fingerprint,
    sigmoid_dpo,
)

torch.set_num_threads(1)


# --- formula -------------------------------------------------------------------------------------


def test_sigmoid_dpo_hand_computed():
    # policy chosen -1, rejected -3; reference -2 for both; beta 0.1:
    #   chosen reward 0.1 * (-1 + 2) = 0.1, rejected reward 0.1 * (-3 + 2) = -0.1,
    #   loss = -log sigmoid(0.2) = log(1 + e^-0.2) = 0.598138869...
    terms = sigmoid_dpo(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1)
    assert terms.losses.item() == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-7)
    assert terms.losses.item() == pytest.approx(0.5981388693, abs=1e-7)
    assert terms.chosen_rewards.item() == pytest.approx(0.1)
    assert terms.rejected_rewards.item() == pytest.approx(-0.1)
    # Policy equal to the reference: loss is log 2 whatever the log-probabilities.
    same = sigmoid_dpo(torch.tensor([-5.0]), torch.tensor([-1.0]), torch.tensor([-5.0]), torch.tensor([-1.0]))
    assert same.losses.item() == pytest.approx(math.log(2))


# --- data ----------------------------------------------------------------------------------------


def _write_pairs(tmp_path, records, name="prefs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    return path


def _image(tmp_path, name="page.png", color=(200, 30, 30)):
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (64, 48), color).save(path)
    return path.name


def test_parse_accepts_string_prompts_and_one_turn_answers(tmp_path):
    pair = parse_preference_record(
        {"prompt": "<ocr>", "chosen": [{"role": "assistant", "content": "A"}], "rejected": "B"}, tmp_path, "f:1"
    )
    assert pair.chosen.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "A"}]}
    assert pair.rejected.messages[-1]["content"][0]["text"] == "B"
    assert pair.chosen.messages[:-1] == pair.rejected.messages[:-1]


@pytest.mark.parametrize(
    "record,message",
    [
        ({"chosen": "a", "rejected": "b"}, "missing 'prompt'"),
        ({"prompt": "q", "chosen": "a", "rejected": "a"}, "identical"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "'chosen' must be a non-empty"),
        ({"prompt": [{"from": "gpt", "value": "x"}], "chosen": "a", "rejected": "b"}, "end with a user turn"),
        ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "assistant turn"),
        ({"prompt": "<image>\n<image>\nq", "images": ["x.png"], "chosen": "a", "rejected": "b"}, "2 <image> placeholders for 1 images"),
    ],
)
def test_parse_errors_name_file_and_line(tmp_path, record, message):
    with pytest.raises(DataError, match=f"^prefs.jsonl:7: .*{message}"):
        parse_preference_record(record, tmp_path, "prefs.jsonl:7")


def test_read_skips_bad_lines_with_file_and_line_within_budget(tmp_path):
    _image(tmp_path)
    good = {"images": ["page.png"], "prompt": [{"from": "human", "value": "<image>\n<ocr>"}], "chosen": "A", "rejected": "B"}
    path = _write_pairs(tmp_path, [good, "{not json", {**good, "images": ["gone.png"]}, good])
    budget = BadSampleBudget(max_count=5, max_fraction=1.0)
    pairs = read_preference_pairs([path], budget)
    assert [p.where for p in pairs] == [f"{path}:1", f"{path}:4"]
    assert budget.skipped[0].startswith(f"{path}:2: invalid JSON")
    assert budget.skipped[1].startswith(f"{path}:3: image not found")
    with pytest.raises(DataError, match="too many bad samples"):
        read_preference_pairs([path], BadSampleBudget(max_count=1, max_fraction=1.0))


def test_final_answer_only_keeps_the_last_labelled_run():
    labels = torch.tensor([-100, 5, 6, -100, -100, 7, 8, 9, -100])
    assert final_answer_only(labels).tolist() == [-100, -100, -100, -100, -100, 7, 8, 9, -100]


# --- objective on a tiny model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoProcessor

    from varco_ocr.testing.tiny_model import write_tiny_model

    folder = write_tiny_model(tmp_path_factory.mktemp("tiny-dpo"), seed=3)
    return folder, AutoProcessor.from_pretrained(folder)


def _load(folder):
    from transformers import LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionForConditionalGeneration.from_pretrained(folder).float()


PAIRS = [
    ({"images": ["page.png"], "prompt": [{"from": "human", "value": "<image>\n<ocr>"}],
      "chosen": "<char>TOTAL</char><bbox>0.1, 0.2, 0.3, 0.4</bbox>", "rejected": "<char>T0TAL</char><bbox>0.5, 0.5, 0.9, 0.9</bbox>"}),
    ({"prompt": [{"from": "human", "value": "Say hello"}, {"from": "gpt", "value": "hello"}, {"from": "human", "value": "again"}],
      "chosen": "hello again", "rejected": "no"}),
]


def _encoded(tmp_path, processor, records=PAIRS):
    _image(tmp_path)
    path = _write_pairs(tmp_path, records)
    budget = BadSampleBudget()
    pairs = read_preference_pairs([path], budget)
    encoder = ConversationEncoder(processor, context_length=4096, overlong="drop", budget=budget)
    return path, pairs, [encode_pair(encoder, p, i) for i, p in enumerate(pairs)]


def _plain_dpo(model, ref_model, batch, beta, sft_weight=0.0):
    """The textbook formula on full logits: log_softmax over the whole vocabulary."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "pair_index")}
    labels = batch["labels"][:, 1:]
    mask = labels != -100

    def logps(m):
        logits = m(**inputs).logits[:, :-1].float()
        token = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
        return (token * mask).sum(-1)

    with torch.no_grad():
        ref = logps(ref_model)
    pol = logps(model)
    p = batch["pair_index"].numel()
    loss = -F.logsigmoid(beta * ((pol[:p] - ref[:p]) - (pol[p:] - ref[p:]))).mean()
    if sft_weight:  # per pair: the chosen answer's mean token NLL; then the mean over pairs
        loss = loss + sft_weight * (-pol[:p] / mask[:p].sum(-1)).mean()
    return loss


@pytest.mark.parametrize("sft_weight", [0.0, 0.2])
def test_chunked_dpo_equals_full_logits_dpo_loss_and_gradients(tiny, tmp_path, sft_weight):
    folder, processor = tiny
    _, _, encoded = _encoded(tmp_path, processor)
    batch = collate_pairs(encoded, processor.tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4  # 2 chosen then 2 rejected

    model, ref_model = _load(folder), _load(folder)
    with torch.no_grad():  # make policy differ from the reference so the loss is not log 2
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    objective = DPOObjective(LiveReference(ref_model), beta=0.1, sft_weight=sft_weight, chunk_size=7, vocab_chunk=128)
    loss_sum, metrics = objective(model, batch)
    assert objective.units(batch) == 2
    loss = loss_sum / 2
    grads = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)

    plain = _plain_dpo(model, ref_model, batch, 0.1, sft_weight)
    plain_grads = torch.autograd.grad(plain, [p for p in model.parameters()], allow_unused=True)
    assert abs(loss.item() - math.log(2)) > 1e-4
    torch.testing.assert_close(loss, plain, atol=1e-5, rtol=1e-5)
    compared = 0
    for (name, _), got, want in zip(model.named_parameters(), grads, plain_grads):
        if want is None:
            assert got is None or torch.count_nonzero(got) == 0, name
            continue
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)
        compared += 1
    assert compared > 20  # vision tower, projector and language model all reached
    assert metrics["rewards/margins"] == pytest.approx(metrics["rewards/chosen"] - metrics["rewards/rejected"], abs=1e-6)
    assert ("loss/sft" in metrics) == (sft_weight > 0)


def test_liger_dpo_agrees_with_sequence_logprobs_dpo_when_installed(require_module):
    liger = require_module("liger_kernel.chunked_loss")
    from training.dpo import liger_dpo_loss
    from training.losses import sequence_logprobs

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 6, 8, generator=gen, requires_grad=True)
    ref_hidden = torch.randn(4, 6, 8, generator=gen)
    weight = torch.randn(30, 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 30, (4, 6), generator=gen)
    labels[:, :2] = -100
    ours_pol = sequence_logprobs(hidden, weight, labels.clamp_min(0), labels != -100).total
    ours_ref = sequence_logprobs(ref_hidden, weight.detach(), labels.clamp_min(0), labels != -100).total
    ours = sigmoid_dpo(ours_pol[:2], ours_pol[2:], ours_ref[:2], ours_ref[2:]).losses.mean()
    theirs, aux = liger_dpo_loss(hidden, weight, ref_hidden, weight.detach(), labels)
    assert liger is not None
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aux[0], ours_pol[:2].detach(), atol=1e-5, rtol=1e-5)


def test_liger_objective_matches_chunked_objective_on_the_tiny_model(tiny, tmp_path, require_module):
    require_module("liger_kernel.chunked_loss")
    folder, processor = tiny
    _, _, encoded = _encoded(tmp_path, processor)
    batch = collate_pairs(encoded, processor.tokenizer.pad_token_id)
    model = _load(folder)
    reference = LiveReference(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    results = []
    for use_liger in (False, True):
        loss, metrics = DPOObjective(reference, use_liger=use_liger)(model, batch)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        results.append((loss, metrics, grads))
    (loss_a, metrics_a, grads_a), (loss_b, metrics_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-5)
    assert metrics_a["rewards/margins"] == pytest.approx(metrics_b["rewards/margins"], abs=1e-5)
    for a, b in zip(grads_a, grads_b):
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="live reference and no --sft-weight"):
        DPOObjective(reference, sft_weight=0.2, use_liger=True)


# --- reference cache -----------------------------------------------------------------------------


def test_precomputed_reference_equals_live_reference_and_is_reused(tiny, tmp_path):
    folder, processor = tiny
    path, pairs, encoded = _encoded(tmp_path, processor)
    model = _load(folder)
    live = LiveReference(model)
    batch = collate_pairs(encoded, processor.tokenizer.pad_token_id)
    live_chosen, live_rejected = live.logprobs(batch)

    fingerprint = reference_fingerprint(folder, [path], pairs, {"context_length": 4096})
    cache = tmp_path / "ref.pt"
    calls = []

    def compute():
        calls.append(1)
        return compute_reference_logprobs(model, lambda i: encoded[i], len(encoded), processor.tokenizer.pad_token_id)

    cached = load_or_compute_reference_cache(cache, fingerprint, compute)
    torch.testing.assert_close(cached.logprobs(batch)[0], live_chosen, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(cached.logprobs(batch)[1], live_rejected, atol=1e-5, rtol=1e-6)
    again = load_or_compute_reference_cache(cache, fingerprint, compute)
    assert len(calls) == 1 and torch.equal(again.chosen, cached.chosen)
    # A different setting (or data, or model) is a different fingerprint: recomputed.
    other = reference_fingerprint(folder, [path], pairs, {"context_length": 2048})
    assert other != fingerprint
    load_or_compute_reference_cache(cache, other, compute)
    assert len(calls) == 2


def test_fingerprint_changes_with_model_weights_and_data(tiny, tmp_path):
    folder, processor = tiny
    path, pairs, _ = _encoded(tmp_path, processor)
    base = reference_fingerprint(folder, [path], pairs, {})
    path.write_text(path.read_text() + "\n")
    assert reference_fingerprint(folder, [path], pairs, {}) != base
    from varco_ocr.testing.tiny_model import write_tiny_model

    other_model = write_tiny_model(tmp_path / "other", seed=4)
    assert reference_fingerprint(other_model, [path], pairs, {}) != reference_fingerprint(folder, [path], pairs, {})


def test_cached_reference_refuses_unknown_pairs():
    ref = CachedReference(torch.tensor([1.0, float("nan")]), torch.tensor([2.0, float("nan")]))
    assert ref.logprobs({"pair_index": torch.tensor([0])})[0].tolist() == [1.0]
    with pytest.raises(RuntimeError, match="cache and data disagree"):
        ref.logprobs({"pair_index": torch.tensor([1])})


# --- runs through the shared training loop ------------------------------------------------------


def _run(tiny_folder, data, out, settings, max_steps=4, lr=1e-3):
    from training.dpo import run_dpo
    from training.params import load_config, recipe_path

    cfg = load_config(recipe_path("1.7b", 4), {
        "model": str(tiny_folder), "data": [str(data)], "output_dir": str(out), "max_steps": max_steps,
        "lr": lr, "global_batch_size": 4, "micro_batch_size": 2, "activation_checkpointing": False,
        "context_length": 4096, "save_every": 0, "seed": 0,
    })
    return run_dpo(cfg, settings)


def _margins(model_folder, ref_folder, encoded, pad_token_id):
    """Mean reward margin beta * ((pc - rc) - (pr - rr)) over the pairs, policy vs reference folders."""
    policy = LiveReference(_load(model_folder))
    reference = LiveReference(_load(ref_folder))
    batch = collate_pairs(encoded, pad_token_id)
    pc, pr = policy.logprobs(batch)
    rc, rr = reference.logprobs(batch)
    return (0.1 * ((pc - rc) - (pr - rr))).mean().item()


TRAIN_PAIRS = [
    {"prompt": "Read the receipt", "chosen": "TOTAL 1200", "rejected": "TOTAL 1800"},
    {"prompt": "Read the sign", "chosen": "서울특별시", "rejected": "부가세 현금"},
    {"images": ["page.png"], "prompt": "<image>\n<ocr>", "chosen": "<char>CASH</char><bbox>0.1, 0.1, 0.4, 0.3</bbox>",
     "rejected": "<char>CHANGE</char><bbox>0.5, 0.5, 0.9, 0.7</bbox>"},
    {"prompt": [{"from": "human", "value": "Date?"}, {"from": "gpt", "value": "2024"}, {"from": "human", "value": "Time?"}],
     "chosen": "12:30", "rejected": "Qty 3"},
]


@pytest.mark.slow
def test_a_few_dpo_steps_raise_the_reward_margin(tiny, tmp_path):
    from training.dpo import DPOSettings

    folder, processor = tiny
    data, _, encoded = _encoded(tmp_path, processor, TRAIN_PAIRS)
    result = _run(folder, data, tmp_path / "run", DPOSettings(beta=0.1))
    assert result.steps_done == 4
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    assert result.losses[-1] < result.losses[0]
    margin = _margins(tmp_path / "run", folder, encoded, processor.tokenizer.pad_token_id)
    assert margin > 0.05  # from exactly 0 before training
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    dpo = [json.loads(line) for line in (tmp_path / "run" / "dpo_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in dpo] == [1, 2, 3, 4] and all(r["pairs"] == 4 for r in dpo)
    assert dpo[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before step 1
    assert dpo[-1]["rewards/margins"] > dpo[0]["rewards/margins"]
    assert dpo[-1]["loss/dpo"] == pytest.approx(result.losses[-1], abs=1e-6)
    assert 0.0 <= dpo[-1]["rewards/accuracies"] <= 1.0


@pytest.mark.slow
def test_precomputed_reference_gives_the_live_reference_losses(tiny, tmp_path):
    from training.dpo import DPOSettings

    folder, processor = tiny
    data, _, _ = _encoded(tmp_path, processor, TRAIN_PAIRS)
    live = _run(folder, data, tmp_path / "live", DPOSettings(sft_weight=0.2), max_steps=3)
    cached = _run(folder, data, tmp_path / "cached", DPOSettings(sft_weight=0.2, precompute_ref=True), max_steps=3)
    assert (tmp_path / "cached" / "reference_logps.pt").is_file()
    assert len(live.losses) == len(cached.losses) == 3
    for a, b in zip(live.losses, cached.losses):
        assert a == pytest.approx(b, abs=1e-5)


def _cli(args):
    from typer.testing import CliRunner

    from training.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.slow
def test_cli_dpo_runs_with_precomputed_reference_and_reports_bad_data_in_one_line(tiny, tmp_path):
    folder, processor = tiny
    data, _, _ = _encoded(tmp_path, processor, TRAIN_PAIRS)
    common = ["--set", "global_batch_size=2", "--set", "micro_batch_size=2", "--set", "activation_checkpointing=false",
              "--set", "context_length=4096", "--set", "save_every=0"]
    ok = _cli(["dpo", "--model", str(folder), "--data", str(data), "-o", str(tmp_path / "run"), "--max-steps", "1",
               "--precompute-ref", "--sft-weight", "0.2", *common])
    assert ok.exit_code == 0, ok.output
    assert "dpo: 1 steps" in ok.stdout
    assert (tmp_path / "run" / "reference_logps.pt").is_file() and (tmp_path / "run" / "config.json").is_file()

    broken = _write_pairs(tmp_path, [{"prompt": "q", "chosen": "same", "rejected": "same"}], name="broken.jsonl")
    bad = _cli(["dpo", "--model", str(folder), "--data", str(broken), "-o", str(tmp_path / "bad"), *common])
    assert bad.exit_code != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.jsonl:1" in lines[0], bad.stderr


@pytest.mark.slow
def test_interrupted_dpo_run_resumes_to_the_same_losses_and_metric_steps(tiny, tmp_path):
    from training.dpo import DPOSettings, run_dpo
    from training.params import load_config, recipe_path

    folder, processor = tiny
    # Every pair has an image: parameters that never received a gradient (the vision tower, with
    # text-only data) have no optimizer state to checkpoint, which the shared loader refuses on resume.
    with_images = [p for p in TRAIN_PAIRS if "images" in p]
    with_images.append({**with_images[0], "chosen": "<char>VAT</char>", "rejected": "<char>TAX</char>"})
    data, _, _ = _encoded(tmp_path, processor, with_images)

    def run(out, steps):
        cfg = load_config(recipe_path("1.7b", 4), {
            "model": str(folder), "data": [str(data)], "output_dir": str(out), "max_steps": steps, "lr": 1e-3,
            "global_batch_size": 2, "micro_batch_size": 1, "activation_checkpointing": False, "save_every": 1, "seed": 0,
        })
        return run_dpo(cfg, DPOSettings()).losses

    straight = run(tmp_path / "straight", 4)
    first = run(tmp_path / "resumed", 2)
    rest = run(tmp_path / "resumed", 4)  # same command, longer: continues from the step-2 checkpoint
    assert first + rest == straight  # bit-identical: same batches, same reference, same optimizer state
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "dpo_metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_process_fsdp_dpo_with_precomputed_reference_matches_single_process(tiny, tmp_path):
    import os
    import subprocess
    import sys

    from training.dpo import DPOSettings, run_dpo
    from training.params import load_config, recipe_path

    folder, processor = tiny
    # Every pair has an image: under FSDP all ranks must run the vision tower together (see losses.py).
    with_images = [p for p in TRAIN_PAIRS if "images" in p]
    with_images.append({**with_images[0], "chosen": "<char>VAT</char>", "rejected": "<char>TAX</char>"})
    data, _, _ = _encoded(tmp_path, processor, with_images)
    settings = {"max_steps": 2, "lr": 1e-3, "global_batch_size": 2, "micro_batch_size": 1,
                "activation_checkpointing": True, "save_every": 0, "seed": 0}
    cfg = load_config(recipe_path("1.7b", 4), {**settings, "model": str(folder), "data": [str(data)],
                                               "output_dir": str(tmp_path / "single")})
    single = run_dpo(cfg, DPOSettings(sft_weight=0.1)).losses  # live reference, one process

    worker = __file__.replace("test_dpo.py", "dpo_fsdp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker,
           str(folder), str(data), str(tmp_path / "fsdp"), json.dumps(settings), "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(entry for entry in proc.stdout.splitlines() if entry.startswith("LOSSES "))
    assert json.loads(line[len("LOSSES "):]) == pytest.approx(single, abs=1e-5)
    metrics = [json.loads(entry) for entry in (tmp_path / "fsdp" / "dpo_metrics.jsonl").read_text().splitlines()]
    assert [m["pairs"] for m in metrics] == [2, 2]  # all-reduced over both ranks
