"""Shared fixtures: the tiny random-weight model, the shared data folder, the samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def shared_dir() -> Path:
    """../shared beside the checkout, or $VARCO_SHARED."""
    return Path(os.environ.get("VARCO_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set VARCO_SHARED)")
    return path


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight VARCO-like model folder, built offline once per test session."""
    import torch

    torch.set_num_threads(1)
    from varco_ocr.testing.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def documents_are_schema_valid(tmp_path):
    """Use in a module (``pytestmark``): after each test, every JSON written under its ``tmp_path``
    must be a schema-valid document (tests/schema_check.py)."""
    from schema_check import assert_valid_json_outputs

    yield
    assert_valid_json_outputs(tmp_path)
