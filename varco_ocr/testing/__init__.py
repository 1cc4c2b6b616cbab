"""Test and offline-trial helpers: `python -m varco_ocr.testing tiny-model OUT_DIR`."""
