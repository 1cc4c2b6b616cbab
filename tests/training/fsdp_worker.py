"""Run under `torchrun --nproc-per-node 2` by test_fsdp.py: stage-2 training to step 2, then a fresh
model/optimizer resumed from the step-2 checkpoint to step 4, both through `train_stage` in one launch
(one launch instead of two halves the test's process start-up cost). Prints the losses as JSON on rank 0."""

from __future__ import annotations

import json
import os
import sys

import torch

from training.params import load_config, recipe_path
from training.train import train_stage


def main(composed: str, data: str, out: str, settings_json: str) -> None:
    torch.set_num_threads(1)
    settings = json.loads(settings_json)
    base = {**settings, "model": composed, "data": [data], "output_dir": out}
    first = train_stage(load_config(recipe_path("1.7b", 2), {**base, "max_steps": 2})).losses
    # Everything rebuilt from disk: the second call knows the first only through the checkpoint.
    resumed = train_stage(load_config(recipe_path("1.7b", 2), {**base, "max_steps": 4})).losses
    if int(os.environ["RANK"]) == 0:
        print("LOSSES " + json.dumps({"first": first, "resumed": resumed}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
