"""Checkpoint merging: exact averages, a hand-computed TIES case, loadable output, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.merge import (
    MergeError,
    MergeSpec,
    merge_checkpoints,
    parse_size,
    parse_weights,
    ties_merge_tensor,
    trim_to_density,
)

torch.set_num_threads(1)

# transformers 5 writes LLaVA-OneVision checkpoints under the original (pre-4.52) key names.
HEAD = "language_model.lm_head.weight"


@pytest.fixture(scope="module")
def two_tiny_models(tmp_path_factory):
    from varco_ocr.testing.tiny_model import write_tiny_model

    root = tmp_path_factory.mktemp("merge")
    return write_tiny_model(root / "a", seed=1), write_tiny_model(root / "b", seed=2)


def _state(folder):
    """The model's state dict through the real loading path; refuses missing or unexpected keys."""
    from transformers import LlavaOnevisionForConditionalGeneration

    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.state_dict()


def _raw_tensors(folder):
    return load_file(folder / "model.safetensors")


def test_half_half_merge_is_the_exact_tensorwise_mean_and_loads(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    out = merge_checkpoints(MergeSpec(inputs=(a, b), weights=(0.5, 0.5)), tmp_path / "merged")
    ta, tb = _raw_tensors(a), _raw_tensors(b)
    merged = _raw_tensors(out)
    assert set(merged) == set(ta)
    for name in ta:
        expected = ((ta[name].float() + tb[name].float()) / 2).to(ta[name].dtype)
        assert torch.equal(merged[name], expected), name
    assert json.loads((out / "merge_info.json").read_text())["weights"] == [0.5, 0.5]
    for side_file in ("config.json", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
        if (a / side_file).exists():
            assert (out / side_file).read_bytes() == (a / side_file).read_bytes()
    # Through from_pretrained: the folder is a loadable model holding the mean of the loaded models.
    sa, sb, sm = _state(a), _state(b), _state(out)
    for name in sa:
        assert torch.equal(sm[name], ((sa[name].float() + sb[name].float()) / 2).to(sa[name].dtype)), name


def test_uniform_average_of_three_with_sharded_output(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    out = merge_checkpoints(MergeSpec(inputs=(a, b, a), max_shard_bytes=20_000), tmp_path / "merged")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    ta, tb = _state(a), _state(b)
    merged = _state(out)
    for name in ta:
        expected = (ta[name].float() * (1 / 3) + tb[name].float() * (1 / 3) + ta[name].float() * (1 / 3)).to(ta[name].dtype)
        torch.testing.assert_close(merged[name], expected, atol=1e-7, rtol=0)


def test_weighted_merge_normalises_weights_and_reads_sharded_input(two_tiny_models, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    a, b = two_tiny_models
    sharded_b = tmp_path / "b-sharded"
    LlavaOnevisionForConditionalGeneration.from_pretrained(b).save_pretrained(sharded_b, max_shard_size="30KB")
    assert (sharded_b / "model.safetensors.index.json").is_file()
    for path in b.iterdir():  # side files so the folder is complete
        if not path.name.endswith(".safetensors") and not (sharded_b / path.name).exists():
            (sharded_b / path.name).write_bytes(path.read_bytes())
    out = merge_checkpoints(MergeSpec(inputs=(a, sharded_b), weights=(7, 3)), tmp_path / "merged")
    ta, tb = _raw_tensors(a), _raw_tensors(b)
    merged = _raw_tensors(out)
    name = HEAD
    torch.testing.assert_close(merged[name], ta[name] * 0.7 + tb[name] * 0.3, atol=1e-7, rtol=0)


def test_trim_keeps_the_largest_magnitudes():
    tau = torch.tensor([0.1, -0.9, 0.3, -0.2, 0.5])
    assert trim_to_density(tau, 0.4).tolist() == pytest.approx([0, -0.9, 0, 0, 0.5])
    assert trim_to_density(tau, 1.0).tolist() == pytest.approx(tau.tolist())
    assert trim_to_density(tau, 0.01).tolist() == pytest.approx([0, -0.9, 0, 0, 0])  # at least one kept


def test_ties_hand_computed_example():
    base = torch.zeros(4)
    # Task vectors (base is 0, so they equal the checkpoints):
    t1 = torch.tensor([0.5, -0.1, 0.3, -0.2])
    t2 = torch.tensor([-0.4, 0.2, 0.1, -0.6])
    t3 = torch.tensor([0.3, 0.05, -0.5, 0.1])
    # density 0.5 keeps 2 of 4 per vector:
    #   t1 -> [0.5, 0, 0.3, 0]   t2 -> [-0.4, 0, 0, -0.6]   t3 -> [0.3, 0, -0.5, 0]
    # elected sign of the sums [0.4, 0, -0.2, -0.6] -> [+, 0, -, -]
    # disjoint means: e0 = (0.5 + 0.3) / 2 = 0.4 (t2 disagrees); e1 = 0 (nothing kept);
    #                 e2 = -0.5 (only t3 agrees); e3 = -0.6
    merged = ties_merge_tensor(base, [t1, t2, t3], [1.0, 1.0, 1.0], density=0.5)
    torch.testing.assert_close(merged, torch.tensor([0.4, 0.0, -0.5, -0.6]))
    # lambda scales the merged task vector; a non-zero base is added back.
    scaled = ties_merge_tensor(base + 1, [t1 + 1, t2 + 1, t3 + 1], [1.0, 1.0, 1.0], density=0.5, scale=0.5)
    torch.testing.assert_close(scaled, torch.tensor([1.2, 1.0, 0.75, 0.7]))


def test_ties_merge_of_folders_applies_the_tensor_rule(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    base = a  # a as base: b's task vector alone, trimmed, is the whole merge
    out = merge_checkpoints(MergeSpec(inputs=(b,), method="ties", base=base, density=0.3), tmp_path / "ties")
    ta, tb, merged = _raw_tensors(a), _raw_tensors(b), _raw_tensors(out)
    name = HEAD
    expected = ta[name] + trim_to_density(tb[name] - ta[name], 0.3)
    torch.testing.assert_close(merged[name], expected, atol=1e-7, rtol=0)
    changed = (merged[name] != ta[name]).float().mean().item()
    assert 0.25 < changed < 0.35


def _rewrite_tensor(src, dest, name, tensor):
    dest.mkdir()
    for path in src.iterdir():
        if path.is_file() and path.name != "model.safetensors":
            (dest / path.name).write_bytes(path.read_bytes())
    tensors = _raw_tensors(src)
    if tensor is None:
        del tensors[name]
    else:
        tensors[name] = tensor
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_mismatched_shape_is_refused_naming_the_tensor(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    bad = _rewrite_tensor(b, tmp_path / "bad", HEAD, torch.zeros(7, 32))
    with pytest.raises(MergeError, match=r"tensor 'language_model.lm_head.weight' has shape \[\d+, 32\] in .* but \[7, 32\]"):
        merge_checkpoints(MergeSpec(inputs=(a, bad)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tensor_and_other_architecture_are_refused(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    missing = _rewrite_tensor(b, tmp_path / "missing", HEAD, None)
    with pytest.raises(MergeError, match="'language_model.lm_head.weight' .* is missing from"):
        merge_checkpoints(MergeSpec(inputs=(a, missing)), tmp_path / "out")
    other = _rewrite_tensor(b, tmp_path / "other", HEAD, _raw_tensors(b)[HEAD])
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["Qwen3ForCausalLM"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(MergeError, match="Qwen3ForCausalLM"):
        merge_checkpoints(MergeSpec(inputs=(a, other)), tmp_path / "out")


def test_bad_specs_are_refused(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    with pytest.raises(MergeError, match="2 weights for 3"):
        MergeSpec(inputs=(a, b, a), weights=(0.5, 0.5))
    with pytest.raises(MergeError, match="needs --base"):
        MergeSpec(inputs=(a, b), method="ties")
    with pytest.raises(MergeError, match="density"):
        MergeSpec(inputs=(a, b), method="ties", base=a, density=0)
    with pytest.raises(MergeError, match="at least 2"):
        MergeSpec(inputs=(a,))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MergeError, match="already exists"):
        merge_checkpoints(MergeSpec(inputs=(a, b)), tmp_path / "full")
    with pytest.raises(MergeError, match="no model.safetensors"):
        merge_checkpoints(MergeSpec(inputs=(a, tmp_path / "full")), tmp_path / "o")


def test_parsers():
    assert parse_weights("0.7,0.3") == (0.7, 0.3)
    assert parse_weights(None) is None
    with pytest.raises(MergeError):
        parse_weights("0.7;0.3")
    assert parse_size("5GB") == 5_000_000_000
    assert parse_size("2MiB") == 2 * 1024**2
    assert parse_size("123") == 123
    with pytest.raises(MergeError):
        parse_size("lots")


def _cli(args):
    from typer.testing import CliRunner

    from training.cli import app

    return CliRunner().invoke(app, args)


def test_cli_merge_writes_the_mean_and_refuses_mismatches_in_one_line(two_tiny_models, tmp_path):
    a, b = two_tiny_models
    ok = _cli(["merge", str(a), str(b), "--weights", "0.5,0.5", "-o", str(tmp_path / "m")])
    assert ok.exit_code == 0, ok.output
    ta, tb, merged = _raw_tensors(a), _raw_tensors(b), _raw_tensors(tmp_path / "m")
    assert torch.equal(merged[HEAD], (ta[HEAD] + tb[HEAD]) / 2)

    bad = _rewrite_tensor(b, tmp_path / "bad", HEAD, torch.zeros(7, 32))
    result = _cli(["merge", str(a), str(bad), "-o", str(tmp_path / "m2")])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot merge: tensor 'language_model.lm_head.weight' has shape")
    assert "Traceback" not in result.output
    ties = _cli(["merge", str(b), "--method", "ties", "--base", str(a), "--density", "0.3", "-o", str(tmp_path / "t")])
    assert ties.exit_code == 0, ties.output
    assert json.loads((tmp_path / "t" / "merge_info.json").read_text())["density"] == 0.3


def _synthetic(folder, tensors):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava_onevision", "architectures": ["X"]}))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_bfloat16_weights_keep_their_dtype_and_integer_buffers_must_agree(tmp_path):
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(5, 3, generator=gen).bfloat16(), torch.randn(5, 3, generator=gen).bfloat16()
    ids = torch.arange(4)
    a = _synthetic(tmp_path / "a", {"w": w1, "position_ids": ids})
    b = _synthetic(tmp_path / "b", {"w": w2, "position_ids": ids})
    merged = load_file(merge_checkpoints(MergeSpec(inputs=(a, b)), tmp_path / "m") / "model.safetensors")
    assert merged["w"].dtype == torch.bfloat16
    assert torch.equal(merged["w"], ((w1.float() + w2.float()) / 2).bfloat16())  # one rounding, from float32
    assert torch.equal(merged["position_ids"], ids)
    c = _synthetic(tmp_path / "c", {"w": w2, "position_ids": ids + 1})
    with pytest.raises(MergeError, match="non-float tensor 'position_ids' differs"):
        merge_checkpoints(MergeSpec(inputs=(a, c)), tmp_path / "m2")
    assert not (tmp_path / "m2").exists()  # nothing half-written under the final name
