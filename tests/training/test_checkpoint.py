"""Checkpoints: an interrupted run (even mid-save) resumes from the last complete checkpoint onto the same
trajectory; export rebuilds a loadable HF folder from the DCP shards."""

from __future__ import annotations

import json

import pytest
import torch

from training.checkpoint import CheckpointError, export_checkpoint, latest_checkpoint
from training.params import load_config, recipe_path
from training.train import train_stage

from test_train_loop import _state, write_dataset

torch.set_num_threads(1)


def _cfg(composed_dir, data, out, steps):
    return load_config(recipe_path("1.7b", 2), {
        "model": str(composed_dir), "data": [str(data)], "output_dir": str(out), "global_batch_size": 2, "micro_batch_size": 1,
        "max_steps": steps, "max_grid": 1, "activation_checkpointing": False, "schedule": "constant", "warmup_ratio": 0.0,
        "lr": 1e-3, "save_every": 1, "keep_checkpoints": 2})


def test_interrupted_run_resumes_onto_the_same_trajectory(composed_dir, tmp_path):
    data = write_dataset(tmp_path / "data", n=5)
    straight = train_stage(_cfg(composed_dir, data, tmp_path / "straight", 3)).losses

    run = tmp_path / "run"
    assert train_stage(_cfg(composed_dir, data, run, 2)).losses == straight[:2]
    # A crash in the middle of writing the step-3 checkpoint leaves only its .tmp folder behind.
    partial = run / "checkpoints" / "step-00000003.tmp"
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"half a shard")
    assert latest_checkpoint(run).name == "step-00000002"
    resumed = train_stage(_cfg(composed_dir, data, run, 3)).losses
    assert resumed == straight[2:]  # bit-identical in one process
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    # Only the newest `keep_checkpoints` survive, and no temporary folder.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000003"]

    # Export from the DCP shards equals the model the run wrote at its end.
    export_checkpoint(run, tmp_path / "exported")
    final, exported = _state(run), _state(tmp_path / "exported")
    assert final.keys() == exported.keys()
    assert all(torch.equal(final[k], exported[k]) for k in final)
    straight_state = _state(tmp_path / "straight")
    assert all(torch.equal(final[k], straight_state[k]) for k in final)


def test_export_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a training run folder"):
        export_checkpoint(tmp_path, tmp_path / "out")
