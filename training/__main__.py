"""`python -m training ...` (what `torchrun ... -m training stage 3 ...` runs): the `varco-train` CLI."""

from training.cli import main

main()
