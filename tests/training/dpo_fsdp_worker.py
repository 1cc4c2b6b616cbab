"""Run by test_dpo.py under `torchrun --nproc-per-node 2`: a DPO run with FSDP2 (gloo, CPU); prints the
per-step losses as `LOSSES [...]` on rank 0. Args: MODEL DATA OUT SETTINGS_JSON PRECOMPUTE(0/1)."""

from __future__ import annotations

import json
import os
import sys

import torch

from training.dpo import DPOSettings, run_dpo
from training.params import load_config, recipe_path

torch.set_num_threads(1)
model, data, out, settings, precompute = sys.argv[1:6]
cfg = load_config(recipe_path("1.7b", 4), {**json.loads(settings), "model": model, "data": [data], "output_dir": out})
result = run_dpo(cfg, DPOSettings(sft_weight=0.1, precompute_ref=precompute == "1"))
if int(os.environ.get("RANK", "0")) == 0:
    print("LOSSES " + json.dumps(result.losses), flush=True)
