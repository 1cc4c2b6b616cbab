"""Predictions from untrusted files (issue 13 part 2): every crafted zip ends in one line on stderr and
exit code 1, through the CLI as a user runs it, and the size cases in bounded memory.

Zips are assembled here byte by byte (``_zip``), so each can carry what zipfile would never write: a
lying header, an encryption flag, an unknown compression method, a wrong CRC, odd member names."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

# Runs the CLI as a child and reports the child's peak RSS (ru_maxrss, KiB on Linux) on stdout.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(p.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(p.returncode)\n"
)


def _zip(members, *, cd_names=None):
    """A zip archive from ``(name: bytes, payload: bytes, dict(method, size, crc, flags))`` members;
    ``size``/``crc`` default to the truth for a stored payload. ``cd_names`` overrides names in the
    central directory only."""
    local, central = b"", b""
    for k, (name, payload, opts) in enumerate(members):
        method = opts.get("method", 0)
        size = opts.get("size", len(payload))
        crc = opts.get("crc", zlib.crc32(payload))
        flags = opts.get("flags", 0)
        offset = len(local)
        local += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, flags, method, 0, 0x21, crc, len(payload), size, len(name), 0)
        local += name + payload
        cd_name = name if cd_names is None else cd_names[k]
        external = 0x10 if cd_name.endswith(b"/") else 0
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, flags, method, 0, 0x21, crc, len(payload), size,
                               len(cd_name), 0, 0, 0, 0, external, offset)
        central += cd_name
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    return local + central + eocd


def _deflated_repeats(block: bytes, times: int) -> tuple[bytes, int]:
    """Raw deflate of ``block * times`` built from one compressed block: after a full flush the
    compressor starts afresh, so every repeat compresses to the same bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    return one * times + c.flush(zlib.Z_FINISH), crc


def _deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


GOOD = b"10,10,60,10,60,30,10,30,HELLO\n"


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "gt_img_1.txt").write_text("10,10,60,10,60,30,10,30,HELLO\n")
    Image.new("RGB", (100, 50), "white").save(data / "img_1.jpg")
    return data


def run_eval(data, predictions, measure=False):
    cmd = [sys.executable, "-m", "varco_ocr", "eval", "icdar2015", "--data", str(data), "-p", str(predictions), "--metric", "cleval"]
    if measure:
        cmd = [sys.executable, "-c", _MEASURE, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=300)


def assert_one_line(proc, *fragments):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def write(tmp_path, blob, name="sub.zip"):
    p = tmp_path / name
    p.write_bytes(blob)
    return p


# Peak RSS of the whole CLI (Python, numpy, shapely, rich, typer) scoring one tiny image is ~55 MiB
# here; before streaming, the zeros case took 2.1 GB and the newlines case 1 GB.
RSS_LIMIT_KIB = 300 * 1024


def test_a_1mb_zip_of_1gb_of_zeros_is_refused_in_bounded_memory(data_dir, tmp_path):
    payload, crc = _deflated_repeats(bytes(MiB), 1024)
    assert len(payload) < 1.1 * MiB
    sub = write(tmp_path, _zip([(b"res_img_1.txt", payload, dict(method=8, size=1024 * MiB, crc=crc))]))
    proc = run_eval(data_dir, sub, measure=True)
    assert_one_line(proc, "sub.zip!res_img_1.txt", "more than any prediction file holds")
    assert int(proc.stdout.strip()) < RSS_LIMIT_KIB


def test_100mb_of_newlines_is_refused_in_bounded_memory(data_dir, tmp_path):
    payload, crc = _deflated_repeats(b"\n" * MiB, 100)
    sub = write(tmp_path, _zip([(b"res_img_1.txt", payload, dict(method=8, size=100 * MiB, crc=crc))]))
    proc = run_eval(data_dir, sub, measure=True)
    assert_one_line(proc, "res_img_1.txt", "more than any prediction file holds")
    assert int(proc.stdout.strip()) < RSS_LIMIT_KIB


def test_absurd_compression_ratio_is_refused_below_the_size_cap(data_dir, tmp_path):
    payload, crc = _deflated_repeats(b"\n" * MiB, 3)  # 3 MiB of newlines in a few KB: 1000:1
    sub = write(tmp_path, _zip([(b"res_img_1.txt", payload, dict(method=8, size=3 * MiB, crc=crc))]))
    assert_one_line(run_eval(data_dir, sub), "res_img_1.txt", "compression ratio", "which no prediction file has")


def test_a_member_whose_header_lies_about_its_size_is_read_no_further(data_dir, tmp_path):
    # declares 31 bytes, holds 100 MiB of newlines: zipfile stops at the declared size, the CRC fails
    payload, _ = _deflated_repeats(b"\n" * MiB, 100)
    sub = write(tmp_path, _zip([(b"res_img_1.txt", payload, dict(method=8, size=len(GOOD), crc=zlib.crc32(GOOD)))]))
    proc = run_eval(data_dir, sub, measure=True)
    assert_one_line(proc, "res_img_1.txt", "damaged member")
    assert int(proc.stdout.strip()) < RSS_LIMIT_KIB


@pytest.mark.parametrize("number", ["9" * 400, "1000001", "-2000000"], ids=["400 digits", "1000001", "-2000000"])
def test_huge_coordinates_are_refused_with_file_and_line(data_dir, tmp_path, number):
    content = GOOD + f"10,10,{number},10,60,30,10,30,WORLD\n".encode()
    sub = write(tmp_path, _zip([(b"res_img_1.txt", content, {})]))
    assert_one_line(run_eval(data_dir, sub), "sub.zip!res_img_1.txt:2:", "out of range")


@pytest.mark.parametrize("line", [
    "377,117,463,117,465,130,378,Word",  # 7 numbers: not a box from the first four
    "10,10,60,10,60,30,10,1e300,WORLD",  # not an integer (the official rule)
    "10,10,60,10,60,30,10,inf,WORLD",
    "10,10,60,30,WORLD",  # an LTRB line is not an ICDAR2015 line
])
def test_a_line_without_eight_integer_coordinates_is_an_error(data_dir, tmp_path, line):
    sub = write(tmp_path, _zip([(b"res_img_1.txt", GOOD + line.encode() + b"\n", {})]))
    assert_one_line(run_eval(data_dir, sub), "res_img_1.txt:2:", "8 integer coordinates")


def test_transcriptions_keep_their_commas(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"res_img_1.txt", b"10,10,60,10,60,30,10,30,HEL,LO\n", {})]))
    from varco_ocr.eval.predictions import read_predictions

    assert read_predictions(sub)["img_1"].regions[0].text == "HEL,LO"


def test_duplicate_member_names_in_different_folders_are_refused(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"a/res_img_1.txt", GOOD, {}), (b"b/res_img_1.txt", b"", {})]))
    assert_one_line(run_eval(data_dir, sub), "sub.zip!b/res_img_1.txt", "second prediction file for image 'img_1'", "a/res_img_1.txt")


def test_encrypted_member(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"res_img_1.txt", GOOD, dict(flags=0x1))]))
    assert_one_line(run_eval(data_dir, sub), "res_img_1.txt", "encrypted member")


def test_unsupported_compression(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"res_img_1.txt", GOOD, dict(method=99))]))  # 99: WinZip AES
    assert_one_line(run_eval(data_dir, sub), "res_img_1.txt", "unsupported compression method 99")


def test_bad_crc(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"res_img_1.txt", _deflated(GOOD), dict(method=8, size=len(GOOD), crc=zlib.crc32(GOOD) ^ 1))]))
    line = assert_one_line(run_eval(data_dir, sub), "res_img_1.txt", "damaged member", "CRC")
    assert "not a zip file" not in line


def test_broken_deflate_data(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"res_img_1.txt", b"\xff" * 40, dict(method=8, size=len(GOOD), crc=zlib.crc32(GOOD)))]))
    assert_one_line(run_eval(data_dir, sub), "res_img_1.txt", "damaged member, cannot decompress")


def test_not_a_zip(data_dir, tmp_path):
    assert_one_line(run_eval(data_dir, write(tmp_path, b"PK\x03\x04 truncated")), "sub.zip", "not a zip file")


def test_directory_entry_named_like_a_prediction_file(data_dir, tmp_path):
    sub = write(tmp_path, _zip([(b"res_img_1.txt/", b"", {})]))
    assert_one_line(run_eval(data_dir, sub), "res_img_1.txt/", "a folder named like a prediction file")


@pytest.mark.parametrize("name, shown", [
    (b"res_img_1.txt\nFAKE: ok", "res_img_1.txt\\nFAKE: ok"),  # not a res_ name: ignored, and the error names the zip
    (b"dir\n\x1b[31m/res_img_1.txt", "dir\\n\\x1b[31m/res_img_1.txt"),
])
def test_member_names_are_printed_escaped_on_one_line(data_dir, tmp_path, name, shown):
    sub = write(tmp_path, _zip([(name, b"oops\n", {})]))
    proc = run_eval(data_dir, sub)
    if name.endswith(b".txt"):
        line = assert_one_line(proc, shown + ":1:")
    else:
        line = assert_one_line(proc, "no res_<image>.txt files found")
    assert "\x1b" not in line


def test_document_json_with_infinite_or_huge_coordinates(data_dir, tmp_path):
    import json

    from varco_ocr.document import Block, Document, Line, Page, Word

    doc = Document(source="img_1.jpg", pages=(Page(0, 100, 50, (Block((Line((Word("HELLO", (10, 10, 60, 30)),)),)),)),))
    d = json.loads(doc.dumps(indent=None))
    for value, fragment in ((1e400, "not a varco-ocr document"), (10 ** 12, "out of range")):
        d["pages"][0]["words"][0]["bbox"][2] = value
        p = tmp_path / "run.jsonl"
        p.write_text(json.dumps(d) + "\n")
        assert_one_line(run_eval(data_dir, p), "run.jsonl:1:", fragment)


def test_a_zip_with_absurdly_many_members_is_refused_before_its_directory_is_loaded(data_dir, tmp_path):
    members = [(f"x{i}".encode(), b"", {}) for i in range(20_001)]
    sub = write(tmp_path, _zip([(b"res_img_1.txt", GOOD, {})] + members))
    assert_one_line(run_eval(data_dir, sub), "sub.zip", "20,002 members", "limit 20,000")
