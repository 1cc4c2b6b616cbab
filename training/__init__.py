"""Training VARCO-VISION-2.0-style models: compose, stages 1-3 (SFT), DPO, merging, synthetic data.

Kept beside the `varco_ocr` library (as open_clip keeps `src/training` beside `open_clip`): the library never
imports it, and its heavy extras (pyyaml, liger-kernel, bitsandbytes) come with `pip install -e ".[train]"`.
One module per concern: params (config), compose, data, targets, synth, train (loop), parallel (FSDP2,
activation checkpointing), optim, scheduler, checkpoint, losses, dpo, merge, cli.
"""
