"""Writes go to a temporary file beside the target and are renamed over it only when complete: a crash
in the middle of a write (a full disk, a kill) leaves the previous file whole, and no temporary file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from varco_ocr.document import Document, Word, atomic_path, write_atomic
from varco_ocr.exporters import write_exports
from varco_ocr.layout import build_page


def _doc(text: str) -> Document:
    page = build_page([Word(text, (10, 10, 60, 30), 0.9)], index=0, width=100, height=50)
    return Document(source="scan.png", pages=(page,), model="m")


@pytest.fixture
def disk_full_midway(monkeypatch):
    """Call it to make every Path.write_bytes / write_text write the first half of its data, then
    fail as a full disk does."""
    real = Path.write_bytes

    def half_then_fail(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def arm() -> None:
        monkeypatch.setattr(Path, "write_bytes", half_then_fail)
        monkeypatch.setattr(Path, "write_text", lambda self, data, *a, **k: half_then_fail(self, data.encode()))

    return arm


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_final_name_is_untouched_until_the_write_completes(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new, half written")
        assert tmp != target and tmp.parent == target.parent  # same folder: the rename is atomic
        assert target.read_text() == "old"  # a reader (or a crash) now still sees the old file
    assert target.read_text() == "new, half written" and _only(tmp_path) == ["out.json"]
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "new, half written" and _only(tmp_path) == ["out.json"]


def test_a_full_disk_mid_write_leaves_the_previous_document_whole(tmp_path, disk_full_midway):
    target = tmp_path / "page.json"
    old = _doc("before").dumps()
    target.write_text(old, encoding="utf-8")  # the previous run's complete output
    disk_full_midway()
    with pytest.raises(OSError, match="No space left"):
        _doc("after").save(target)
    assert target.read_text(encoding="utf-8") == old
    assert Document.load(target).pages[0].words[0].text == "before"
    assert _only(tmp_path) == ["page.json"]  # no temporary file left behind
    with pytest.raises(OSError):
        write_atomic(tmp_path / "new.txt", "never complete")
    assert _only(tmp_path) == ["page.json"]  # nothing half-written under the new name either


def test_exports_interrupted_mid_write_keep_the_previous_files(tmp_path, disk_full_midway):
    out = tmp_path / "out"
    write_exports(_doc("before"), out, ["txt", "hocr", "alto"], stem="scan")
    before = {name: (out / name).read_bytes() for name in _only(out)}
    assert sorted(before) == ["scan.alto.xml", "scan.hocr", "scan.txt"]
    disk_full_midway()
    for fmt in ("txt", "hocr", "alto"):
        with pytest.raises(OSError):
            write_exports(_doc("after"), out, [fmt], stem="scan")
    assert {name: (out / name).read_bytes() for name in _only(out)} == before
