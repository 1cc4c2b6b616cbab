"""Fixtures for the eval tests: the shared real data sets (skipped visibly when absent, a failure on
CI: tests/conftest.py ``require``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def icdar2015_sample(shared, require) -> Path:
    path = shared / "data" / "icdar2015-test-sample"
    if not (path / "gt").is_dir():
        require(f"shared ICDAR2015 sample not found at {path} (set VARCO_SHARED)")
    return path


@pytest.fixture(scope="session")
def funsd_test(shared, require) -> Path:
    path = shared / "data" / "funsd-test"
    if not (path / "annotations").is_dir():
        require(f"shared FUNSD test set not found at {path} (set VARCO_SHARED)")
    return path
