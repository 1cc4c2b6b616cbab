"""Shared fixtures: the tiny random-weight model, the taught tiny model, the shared data folder, the
samples, and the external tools some checks need.

A missing tool or data set skips the tests that need it, visibly, with the reason; on CI (``CI=true``,
as GitHub Actions and most CI services set it) it is a failure instead, so a CI machine that lost
../shared or poppler cannot pass by checking less.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def shared_dir() -> Path:
    """../shared beside the checkout, or $VARCO_SHARED."""
    return Path(os.environ.get("VARCO_SHARED", REPO.parent / "shared"))


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str):
    """Skip the calling test with ``reason``; on CI, fail it."""
    if on_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require():
    """``require(reason)``: skip (fail on CI) from inside a test, after the checks it could run."""
    return unavailable


@pytest.fixture(scope="session")
def require_module():
    """``require_module(name)``: the imported module; when it cannot be imported, skip (fail on CI)
    naming it. Use it instead of ``pytest.importorskip``, which skips on CI too."""
    import importlib

    def load(name: str):
        try:
            return importlib.import_module(name)
        except ImportError as e:
            error = e
        unavailable(f"{name} cannot be imported ({error}); it is in the dev extra: pip install -e '.[dev]'")

    return load


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not path.is_dir():
        unavailable(f"shared data folder not found at {path} (set VARCO_SHARED)")
    return path


@pytest.fixture(scope="session")
def alto_xsd(shared) -> Path:
    path = shared / "schemas" / "alto-4-4-local.xsd"
    if not path.is_file():
        unavailable(f"ALTO 4.4 schema not found at {path}")
    return path


@pytest.fixture(scope="session")
def pdftotext() -> str:
    path = shutil.which("pdftotext")
    if path is None:
        unavailable("poppler's pdftotext not installed (apt-get install poppler-utils)")
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

@pytest.fixture(scope="session")
def taught(request, tmp_path_factory):
    """A tiny model taught to read the first words of samples/receipt.png and samples/dense-page.png
    (and three words on two blank page sizes): ``varco_ocr.testing.tiny_model.write_taught_model``.
    Run the engine with ``taught.engine_args`` / ``taught.cli_args`` (the settings its answers hold
    for); ``taught.page(name)`` gives each taught page's words (text, pixel box) in reading order.
    Other images read garbage.

    Teaching takes about a CPU-minute, so the folder is kept in pytest's cache (.pytest_cache), keyed
    by everything it is made from (the code that builds and teaches it, the samples, the versions of
    torch and transformers): a change to any of them builds it afresh."""
    import hashlib

    import torch
    import transformers

    torch.set_num_threads(1)
    from varco_ocr import model_spec
    from varco_ocr.testing import tiny_model

    digest = hashlib.sha256(f"{torch.__version__} {transformers.__version__}".encode())
    for path in [Path(tiny_model.__file__), Path(model_spec.__file__), *sorted(SAMPLES.glob("*.words.json")), *sorted(SAMPLES.glob("*.png"))]:
        digest.update(path.name.encode() + path.read_bytes())
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider: build afresh
    name = f"taught-model-{digest.hexdigest()[:16]}"
    folder = Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)
    model = folder / "model"
    if not (model / "model.safetensors").is_file():
        import tempfile

        building = Path(tempfile.mkdtemp(dir=folder, prefix="building-"))
        tiny_model.write_taught_model(building, SAMPLES)
        shutil.rmtree(model, ignore_errors=True)
        building.rename(model)  # whole or absent, whatever interrupts the build
    return Taught(model, {p.name: p for p in tiny_model.taught_pages(SAMPLES)})


class Taught:
    def __init__(self, path: Path, pages: dict) -> None:
        from varco_ocr.testing.tiny_model import TAUGHT_MAX_GRID, TAUGHT_MIN_LONG_SIDE

        self.path = path
        self.pages = pages
        self.engine_args = dict(min_long_side=TAUGHT_MIN_LONG_SIDE, max_grid=TAUGHT_MAX_GRID, max_new_tokens=256)
        self.cli_args = ["--model", str(path), "--min-long-side", str(TAUGHT_MIN_LONG_SIDE),
                         "--max-grid", str(TAUGHT_MAX_GRID), "--max-new-tokens", "256"]

    def page(self, name: str):
        return self.pages[name]

    def words(self, name: str) -> list:
        """[(text, [x1, y1, x2, y2]), ...] as JSON output holds them."""
        return [(t, list(b)) for t, b in self.pages[name].words]


@pytest.fixture()
def fake_servers():
    """``make(**kwargs)`` starts a loopback fake OpenAI-compatible server
    (varco_ocr.testing.fake_server.FakeServer); all are stopped after the test."""
    from varco_ocr.testing.fake_server import FakeServer

    made: list = []

    def make(**kwargs):
        made.append(FakeServer(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.stop()
