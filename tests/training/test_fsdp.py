"""FSDP2 under `torchrun --nproc-per-node 2` (gloo, CPU) reproduces single-process training, resumes from
its sharded checkpoint onto the same trajectory, and exports the same model in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from training.params import load_config, recipe_path
from training.train import train_stage

from test_train_loop import _state, write_dataset

torch.set_num_threads(1)

# Constant LR without warm-up, so a run stopped at step 2 and resumed to step 4 follows the same schedule
# as a 4-step run.
SETTINGS = {"global_batch_size": 4, "micro_batch_size": 1, "max_grid": 1, "activation_checkpointing": True,
            "schedule": "constant", "warmup_ratio": 0.0, "lr": 1e-3, "vision_lr": 1e-4, "save_every": 2, "seed": 5}


WORKER = __file__.replace("test_fsdp.py", "fsdp_worker.py")


def _torchrun(composed_dir, data, out):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", WORKER,
           str(composed_dir), str(data), str(out), json.dumps(SETTINGS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The FSDP2 view-tensor warning does not apply to our forward (training/losses.py) and is silenced there.
    assert "returned a view tensor" not in proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("LOSSES "))
    return json.loads(line[len("LOSSES "):])


@pytest.mark.slow
def test_two_process_fsdp_matches_single_process_and_resumes(composed_dir, tmp_path):
    data = write_dataset(tmp_path / "data", n=6)
    cfg = load_config(recipe_path("1.7b", 2), {**SETTINGS, "model": str(composed_dir), "data": [str(data)], "output_dir": str(tmp_path / "single"), "max_steps": 4})
    single = train_stage(cfg).losses
    assert len(single) == 4 and single[-1] < single[0]

    fsdp_run = tmp_path / "fsdp"
    losses = _torchrun(composed_dir, data, fsdp_run)
    assert losses["first"] == pytest.approx(single[:2], abs=1e-5)  # stopped after the step-2 checkpoint
    assert losses["resumed"] == pytest.approx(single[2:], abs=1e-5)  # a new model resumed at step 3
    assert [json.loads(l)["step"] for l in (fsdp_run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert sorted(p.name for p in (fsdp_run / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000004"]

    # The sharded checkpoint exports in one process to the same weights the 2-process run wrote.
    from training.checkpoint import export_checkpoint

    export_checkpoint(fsdp_run, tmp_path / "exported")
    final, exported, reference = _state(fsdp_run), _state(tmp_path / "exported"), _state(tmp_path / "single")
    assert final.keys() == exported.keys() == reference.keys()
    for k in final:
        assert torch.equal(final[k], exported[k]), k
        torch.testing.assert_close(final[k], reference[k], rtol=1e-4, atol=1e-5)
