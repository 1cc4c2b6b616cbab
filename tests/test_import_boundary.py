"""The server path and the CLI's start-up never import torch or transformers (issue 17): each costs
seconds and hundreds of MB per process for no work on those paths. Each check runs in a fresh
interpreter, since this test process has imported torch long before."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "torchvision")


def run_python(code: str, tmp_path: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; it prints the heavy
    modules it ended up with, one line of JSON, last."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
        """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def test_server_backend_reads_pages_without_torch(tmp_path):
    loaded = run_python("""
        from PIL import Image
        from varco_ocr.server import ServerBackend
        from varco_ocr.testing.fake_server import FakeServer

        fake = FakeServer()
        backend = ServerBackend([fake.url])
        pages = backend.ocr_batch([Image.new("RGB", (300, 200), "white")], indices=[0])
        # the fake answers with log-probabilities: the confidences were computed on this path
        assert [w.text for w in pages[0].words] == ["W2304"] and pages[0].words[0].confidence is not None, pages
        backend.close()
        fake.stop()
        """, tmp_path)
    assert loaded == []


def test_cli_server_run_with_every_export_without_torch(tmp_path, shared):
    image = next((shared / "data" / "funsd-test").rglob("*.png"))
    loaded = run_python(f"""
        import sys
        from varco_ocr.cli import main
        from varco_ocr.testing.fake_server import FakeServer

        fake = FakeServer()
        try:
            main(["ocr", {str(image)!r}, "-o", "out", "--server", fake.url, "-f", "json,txt,hocr,alto,pdf,overlay"])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        fake.stop()
        """, tmp_path)
    written = sorted(p.name.removeprefix(image.stem) for p in (tmp_path / "out").iterdir() if not p.name.startswith("varco"))
    assert written == [".alto.xml", ".hocr", ".json", ".overlay.png", ".pdf", ".txt"]
    assert loaded == []


def test_help_starts_without_torch(tmp_path):
    loaded = run_python("""
        from varco_ocr.cli import main
        for argv in (["--help"], ["ocr", "--help"], ["eval", "--help"], ["ask", "--help"]):
            try:
                main(argv)
            except SystemExit:
                pass
        """, tmp_path)
    assert loaded == []


def test_the_command_does_not_load_pymupdf_layout():
    """pymupdf imports pymupdf_layout and pymupdf4llm (onnxruntime, a model: ~500 ms CPU) when they are
    installed; the varco-ocr command never uses them and keeps them out (issue 17 item 2: their import
    was ~25 ms per document of a 20-document run with a PDF output)."""
    import importlib.util

    if importlib.util.find_spec("pymupdf.layout") is None:
        pytest.skip("pymupdf_layout is not installed here: nothing to keep out")
    code = ("import sys; from varco_ocr.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "import pymupdf; print(sys.modules.get('pymupdf.layout') is None, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    assert out[-2:] == ["True", "False"]
