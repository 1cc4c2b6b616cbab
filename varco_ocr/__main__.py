"""`python -m varco_ocr` is the `varco-ocr` command."""

from varco_ocr.cli import main

main()
