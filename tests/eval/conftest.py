"""Fixtures for the eval tests: the shared real data sets (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    return Path(os.environ.get("VARCO_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def icdar2015_sample() -> Path:
    path = shared_root() / "data" / "icdar2015-test-sample"
    if not (path / "gt").is_dir():
        pytest.skip(f"shared ICDAR2015 sample not found at {path} (set VARCO_SHARED)")
    return path


@pytest.fixture(scope="session")
def funsd_test() -> Path:
    path = shared_root() / "data" / "funsd-test"
    if not (path / "annotations").is_dir():
        pytest.skip(f"shared FUNSD test set not found at {path} (set VARCO_SHARED)")
    return path
