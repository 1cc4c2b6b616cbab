import zipfile

import pytest

from varco_ocr.document import Block, Document, Line, Page, Word
from varco_ocr.eval.predictions import (
    parse_rrc_result,
    read_predictions,
    rrc_lines,
    write_documents_jsonl,
    write_rrc_zip,
)
from varco_ocr.eval.regions import EvalDataError, TextRegion


def make_doc(source, words):
    blocks = (Block((Line(tuple(Word(t, b) for t, b in words)),)),) if words else ()
    return Document(source=source, pages=(Page(index=0, width=100, height=50, blocks=blocks),))


def test_parse_quads_ltrb_and_transcriptions_with_commas():
    regions = parse_rrc_result(
        "1,2,3,2,3,4,1,4,Hi, there\n"
        '1,1,5,1,5,5,1,5,"quoted \\"x\\""\n'
        "0,0,8,0,8,8,0,8\n"
    )
    assert regions[0].text == "Hi, there" and regions[0].points[2] == (3, 4)
    assert regions[1].text == 'quoted "x"'
    assert len(regions[2].points) == 4 and regions[2].text == ""
    regions = parse_rrc_result("10,20,30,40,LTRB word\n10,20,30,40\n", box_format="ltrb")
    assert regions[0].ltrb == (10, 20, 30, 40) and regions[0].text == "LTRB word"
    assert regions[1].text == ""


def test_parse_errors_name_the_line():
    with pytest.raises(EvalDataError, match=r"res_img_1.txt:2:"):
        parse_rrc_result("1,2,3,4\nfoo,bar\n", "res_img_1.txt", box_format="ltrb")
    with pytest.raises(EvalDataError, match=r":1: LTRB"):
        parse_rrc_result("30,2,3,4,x\n", "r.txt", box_format="ltrb")


def test_rrc_zip_round_trip(tmp_path):
    regions = {"img_1": [TextRegion.from_ltrb(1, 2, 30, 40, "a,b")], "img_2": []}
    write_rrc_zip(tmp_path / "sub.zip", regions)
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == ["res_img_1.txt", "res_img_2.txt"]
        assert zf.read("res_img_1.txt").decode() == "1,2,30,2,30,40,1,40,a,b\n"
    preds = read_predictions(tmp_path / "sub.zip")
    assert preds["img_1"].regions[0].text == "a,b" and preds["img_2"].regions == ()


def test_dont_care_is_written_as_hashes():
    assert rrc_lines([TextRegion.from_ltrb(0, 0, 1, 1, "", dont_care=True)]) == "0,0,1,0,1,1,0,1,###\n"


def test_documents_json_folder_and_jsonl(tmp_path):
    doc = make_doc("/data/images/img_3.jpg", [("Hello", (1, 2, 20, 10)), ("world", (25, 2, 50, 10))])
    (tmp_path / "docs").mkdir()
    doc.save(tmp_path / "docs" / "img_3.json")
    preds = read_predictions(tmp_path / "docs")
    assert list(preds) == ["img_3"]
    assert preds["img_3"].regions[1].ltrb == (25, 2, 50, 10)
    assert preds["img_3"].text == "Hello world"
    write_documents_jsonl(tmp_path / "run.jsonl", [doc, make_doc("img_4.png", [])])
    preds = read_predictions(tmp_path / "run.jsonl")
    assert set(preds) == {"img_3", "img_4"} and preds["img_4"].regions == ()


def test_bad_jsonl_line_is_reported(tmp_path):
    p = tmp_path / "run.jsonl"
    p.write_text(make_doc("a.jpg", []).dumps(indent=None) + "\n{oops\n")
    with pytest.raises(EvalDataError, match=r"run.jsonl:2: invalid JSON"):
        read_predictions(p)
    with pytest.raises(EvalDataError, match="predictions not found"):
        read_predictions(tmp_path / "missing")


def test_rrc_zip_round_trip_property(tmp_path_factory):
    """Any integer quads and any transcription without line breaks come back unchanged through the
    streamed reader, including commas, quotes, a leading BOM-like character and non-ASCII text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    coord = st.integers(-1_000_000, 1_000_000)
    text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30)
    region = st.builds(lambda xs, t: TextRegion(tuple(zip(xs[::2], xs[1::2])), t), st.lists(coord, min_size=8, max_size=8), text)
    images = st.dictionaries(st.from_regex(r"img_[0-9]{1,3}", fullmatch=True), st.lists(region, max_size=5), min_size=1, max_size=4)

    @settings(max_examples=30, deadline=None)
    @given(images)
    def check(per_image):
        path = tmp_path_factory.mktemp("rt") / "sub.zip"
        write_rrc_zip(path, per_image)
        preds = read_predictions(path)
        assert set(preds) == set(per_image)
        for key, regions in per_image.items():
            # whitespace-only lines are blank lines to every RRC reader; an empty text is still a region
            assert [(r.points, r.text) for r in preds[key].regions] == [(tuple((float(x), float(y)) for x, y in r.points), r.text) for r in regions]

    check()


# -- exact reader behaviour (mutation testing, benchmarks/RESULTS.md) ------------------------------

import io  # noqa: E402
import json  # noqa: E402

from varco_ocr.eval import predictions  # noqa: E402


def test_document_words_keep_their_text_and_windows_sources_their_stem(tmp_path):
    doc = make_doc("C:\\scans\\img_12.jpg", [("Hello", (1, 2, 20, 10)), ("world", (25, 2, 50, 10))])
    doc.save(tmp_path / "run.json")
    preds = read_predictions(tmp_path / "run.json")
    assert list(preds) == ["img_12"]
    assert [(r.text, r.ltrb) for r in preds["img_12"].regions] == [("Hello", (1, 2, 20, 10)), ("world", (25, 2, 50, 10))]


def _error(path):
    with pytest.raises(EvalDataError) as info:
        read_predictions(path)
    return str(info.value)


def test_document_reader_errors_name_the_file_and_line(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    assert _error(empty) == f"{empty}: no .json or .jsonl prediction files found"
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "version": "1.0",\n  oops\n}')
    assert _error(bad) == f"{bad}:3: invalid JSON: Expecting property name enclosed in double quotes"
    bad.write_text('{"version": "9.0"}')
    assert _error(bad) == f"{bad}: not a varco-ocr document: unsupported document schema version '9.0' (expected 1.0)"
    bad.write_bytes(b'{"source": "\xff"}')
    assert _error(bad).startswith(f"{bad}: not UTF-8 (invalid start byte at byte 12)")
    lines = tmp_path / "run.jsonl"
    lines.write_text(make_doc("a.jpg", []).dumps(indent=None) + '\n{"version": "9.0"}\n')
    assert _error(lines) == f"{lines}:2: not a varco-ocr document: unsupported document schema version '9.0' (expected 1.0)"
    lines.write_text(make_doc("x/img_1.jpg", []).dumps(indent=None) + "\n\n" + make_doc("y/img_1.png", []).dumps(indent=None) + "\n")
    assert _error(lines) == f"{lines}:3: a second document for image 'img_1'"
    twice = tmp_path / "twice"
    twice.mkdir()
    make_doc("x/img_1.jpg", []).save(twice / "a.json")
    make_doc("y/img_1.png", []).save(twice / "b.json")
    assert _error(twice) == f"{twice / 'b.json'}: a second document for image 'img_1'"


def test_document_coordinates_up_to_a_million_on_the_first_page_only(tmp_path):
    ok = make_doc("img_1.jpg", [("w", (0, 0, 1_000_000, 10))])
    second = Page(index=1, width=10, height=10, blocks=(Block((Line((Word("far", (0, 0, 5_000_000, 10)),)),)),))
    ok = Document(ok.source, ok.pages + (second,))
    ok.save(tmp_path / "ok.json")
    assert read_predictions(tmp_path / "ok.json")["img_1"].regions[0].ltrb == (0, 0, 1_000_000, 10)
    far = make_doc("img_1.jpg", [("a-very-long-word-of-30-letters", (0, -1_000_001, 5, 10))])
    far.save(tmp_path / "far.json")
    assert _error(tmp_path / "far.json") == (f"{tmp_path / 'far.json'}: word 'a-very-long-word-of-' has a coordinate "
                                             "out of range (|value| <= 1,000,000)")
    far_in_jsonl = tmp_path / "far.jsonl"
    far_in_jsonl.write_text("\n" + far.dumps(indent=None) + "\n")
    assert _error(far_in_jsonl).startswith(f"{far_in_jsonl}:2: word ")


def test_documents_without_pages_do_not_stop_the_reading(tmp_path):
    run = tmp_path / "run.jsonl"
    run.write_text(Document("img_1.jpg").dumps(indent=None) + "\n" + make_doc("img_2.jpg", [("b", (0, 0, 5, 5))]).dumps(indent=None) + "\n")
    preds = read_predictions(run)
    assert preds["img_1"] == predictions.Prediction((), "") and preds["img_2"].text == "b"
    folder = tmp_path / "docs"
    folder.mkdir()
    Document("img_1.jpg").save(folder / "a.json")
    (folder / "b.JSONL").write_text(make_doc("img_2.jpg", [("b", (0, 0, 5, 5))]).dumps(indent=None))  # suffix in capitals
    assert set(read_predictions(folder)) == {"img_1", "img_2"}


def test_rrc_folder_round_trip(tmp_path):
    regions = {"img_1": [TextRegion.from_ltrb(1, 2, 30, 40, "a,b")], "img_2": []}
    predictions.write_rrc_folder(tmp_path / "res", regions)
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["res_img_1.txt", "res_img_2.txt"]
    (tmp_path / "res" / "res_.txt").write_text("not, a, box\n")  # no image key: not a prediction file
    (tmp_path / "res" / "notes.txt").write_text("x")
    preds = read_predictions(tmp_path / "res")
    assert set(preds) == {"img_1", "img_2"}
    assert [(r.text, r.ltrb) for r in preds["img_1"].regions] == [("a,b", (1, 2, 30, 40))] and preds["img_2"].regions == ()


def test_rrc_folder_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "res_img_1.txt").write_text("0,0,1,0,1,1,0,1,x\n")
    (tmp_path / "b" / "res_img_1.txt").write_text("0,0,1,0,1,1,0,1,x\n")
    assert _error(tmp_path) == (f"{tmp_path / 'b' / 'res_img_1.txt'}: a second prediction file for image 'img_1' "
                                f"(first: {tmp_path / 'a' / 'res_img_1.txt'})")
    (tmp_path / "b" / "res_img_1.txt").unlink()
    (tmp_path / "b" / "res_img_2.txt").mkdir()
    assert _error(tmp_path) == f"{tmp_path / 'b' / 'res_img_2.txt'}: a folder named like a prediction file"
    (tmp_path / "b" / "res_img_2.txt").rmdir()
    (tmp_path / "b" / "res_img_2.txt").write_text("0,0,1,0,1,1,0,1,x\n\nfoo\n")
    assert _error(tmp_path).startswith(f"{tmp_path / 'b' / 'res_img_2.txt'}:3: expected x1,y1")


def test_rrc_folder_size_limits_are_inclusive(tmp_path, monkeypatch):
    # the real limits are megabytes; the same accounting is checked on 20-byte files
    monkeypatch.setattr(predictions, "MAX_MEMBER_BYTES", 20)
    monkeypatch.setattr(predictions, "MAX_TOTAL_BYTES", 40)
    line = "0,0,1,0,1,1,0,1,abc\n"
    assert len(line) == 20
    (tmp_path / "res_img_1.txt").write_text(line)
    (tmp_path / "res_img_2.txt").write_text(line)
    assert set(read_predictions(tmp_path)) == {"img_1", "img_2"}  # each at the limit, together at the total
    (tmp_path / "res_img_3.txt").write_text("\n")
    assert _error(tmp_path) == f"{tmp_path}: prediction files hold more than 40 bytes"
    (tmp_path / "res_img_3.txt").write_text(line + "\n")
    assert _error(tmp_path) == f"{tmp_path / 'res_img_3.txt'}: 21 bytes, more than any prediction file holds (limit 20)"


def test_stream_lines_reads_in_bounded_chunks_and_counts_lines_from_one():
    class Recording(io.BytesIO):
        sizes: list = []

        def read(self, size=-1):
            self.sizes.append(size)
            return super().read(size)

    data = b"a\n" * 70_000  # more than two chunks
    stream = Recording(data)
    lines = list(predictions._stream_lines(stream, "m", len(data)))
    assert len(lines) == 70_000 and lines[0] == (1, b"a") and lines[-1] == (70_000, b"a")
    assert set(stream.sizes) == {64 * 1024}
    with pytest.raises(EvalDataError, match=f"^m: larger than {len(data) - 1:,} bytes"):
        list(predictions._stream_lines(io.BytesIO(data), "m", len(data) - 1))


def test_parse_errors_without_a_path_say_res():
    with pytest.raises(EvalDataError, match="^<res>:1: expected x1,y1"):
        parse_rrc_result("1,2")


def test_stream_lines_keeps_a_last_line_without_newline_and_bounds_line_length():
    assert list(predictions._stream_lines(io.BytesIO(b"a\nb"), "m", 10)) == [(1, b"a"), (2, b"b")]
    longest = b"x" * 65536  # MAX_LINE_BYTES exactly: accepted, whether a newline ends it or not
    assert list(predictions._stream_lines(io.BytesIO(b"a\n" + longest + b"\n"), "m", 10**6))[1] == (2, longest)
    assert list(predictions._stream_lines(io.BytesIO(b"a\n" + longest), "m", 10**6))[1] == (2, longest)
    for tail in (b"\n", b""):
        with pytest.raises(EvalDataError, match="^m:2: line longer than 65,536 bytes$"):
            list(predictions._stream_lines(io.BytesIO(b"a\n" + longest + b"y" + tail), "m", 10**6))


def test_a_member_is_named_in_size_and_encoding_errors_and_zip_members_are_counted(tmp_path):
    with pytest.raises(EvalDataError, match="^w: larger than 20 bytes"):
        predictions._regions_from_stream(io.BytesIO(b"x" * 30), "w", 20, "quad")
    (tmp_path / "res_img_1.txt").write_bytes(b"0,0,1,0,1,1,0,1,ok\n0,0,1,0,1,1,0,1,\xff\n")
    assert _error(tmp_path) == f"{tmp_path / 'res_img_1.txt'}:2: not UTF-8 (invalid start byte at byte 16 of the line)"
    write_rrc_zip(tmp_path / "sub.zip", {"a": [], "b": [], "c": []})
    assert predictions._zip_member_count(tmp_path / "sub.zip") == 3
    (tmp_path / "plain.zip").write_bytes(b"not a zip at all")
    assert predictions._zip_member_count(tmp_path / "plain.zip") is None


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_reader_checks_in_process_with_exact_messages(tmp_path, monkeypatch):
    """The zip checks of test_untrusted_predictions.py (run there through the CLI), here in-process with
    small limits, so a changed limit, boundary or message is seen: each limit is inclusive."""
    line = "0,0,1,0,1,1,0,1,abc\n"  # 20 bytes
    nested = _zip(tmp_path / "nested.zip", {"preds/sub/res_img_1.txt": line, "preds/notes.txt": "x"})
    assert list(read_predictions(nested)) == ["img_1"]
    monkeypatch.setattr(predictions, "MAX_MEMBERS", 3)
    three = _zip(tmp_path / "three.zip", {"c.txt": "", "res_a.txt": "", "res_b.txt": ""})
    assert set(read_predictions(three)) == {"a", "b"}
    four = _zip(tmp_path / "four.zip", {"res_a.txt": "", "res_b.txt": "", "c.txt": "", "d.txt": ""})
    assert _error(four) == f"{four}: 4 members, more than a predictions zip holds (limit 3)"
    plain = tmp_path / "plain.zip"
    plain.write_bytes(b"PK not really")
    assert _error(plain) == f"{plain}: not a zip file (File is not a zip file)"
    folder = _zip(tmp_path / "folder.zip", {"res_a.txt/": ""})
    assert _error(folder) == f"{folder}!res_a.txt/: a folder named like a prediction file"
    twice = _zip(tmp_path / "twice.zip", {"a/res_img_1.txt": line, "b/res_img_1.txt": line})
    assert _error(twice) == f"{twice}!b/res_img_1.txt: a second prediction file for image 'img_1' (first: a/res_img_1.txt)"
    monkeypatch.setattr(predictions, "MAX_MEMBER_BYTES", 20)
    monkeypatch.setattr(predictions, "MAX_TOTAL_BYTES", 40)
    at_limits = _zip(tmp_path / "limits.zip", {"res_a.txt": line, "res_b.txt": line})
    assert set(read_predictions(at_limits)) == {"a", "b"}
    over = _zip(tmp_path / "over.zip", {"res_a.txt": line, "res_b.txt": line, "res_c.txt": "\n"})
    assert _error(over) == f"{over}: prediction files hold more than 40 bytes uncompressed"
    big = _zip(tmp_path / "big.zip", {"res_a.txt": line + "\n"})
    assert _error(big) == f"{big}!res_a.txt: 21 bytes uncompressed, more than any prediction file holds (limit 20)"


def test_zip_compression_ratio_and_damaged_members(tmp_path, monkeypatch):
    monkeypatch.setattr(predictions, "RATIO_FLOOR_BYTES", 1000)
    dense = _zip(tmp_path / "dense.zip", {"res_a.txt": "\n" * 20_000})
    info = zipfile.ZipFile(dense).getinfo("res_a.txt")
    ratio = info.file_size / info.compress_size
    assert ratio > 100
    assert _error(dense) == (f"{dense}!res_a.txt: compression ratio {ratio:,.0f}:1, which no prediction file has "
                             "(limit 100:1)")
    monkeypatch.setattr(predictions, "RATIO_FLOOR_BYTES", 20_000)  # at the floor: not checked
    assert read_predictions(dense)["a"].regions == ()
    stored = _zip(tmp_path / "stored.zip", {"res_a.txt": "0,0,1,0,1,1,0,1,abc\n"}, zipfile.ZIP_STORED)
    data = stored.read_bytes().replace(b"abc", b"abd", 1)
    stored.write_bytes(data)
    assert _error(stored) == f"{stored}!res_a.txt: damaged member (Bad CRC-32 for file 'res_a.txt')"


def test_zip_members_that_cannot_be_read_are_refused_by_name(tmp_path):
    def patched(name, offset_in_central, value):
        path = _zip(tmp_path / name, {"notes.txt": "x", "res_a.txt": "0,0,1,0,1,1,0,1,abc\n"}, zipfile.ZIP_STORED)
        data = bytearray(path.read_bytes())
        central = data.rfind(b"PK\x01\x02")  # the last central header: res_a.txt
        data[central + offset_in_central: central + offset_in_central + 2] = value.to_bytes(2, "little")
        path.write_bytes(bytes(data))
        return path

    encrypted = patched("encrypted.zip", 8, 0x1)  # general purpose flag bit 0
    assert _error(encrypted) == f"{encrypted}!res_a.txt: encrypted member; predictions must be stored without a password"
    unknown = patched("unknown.zip", 10, 99)  # compression method 99 (AES)
    assert _error(unknown) == (f"{unknown}!res_a.txt: unsupported compression method 99 "
                               "(supported: stored, deflate, bzip2, lzma)")
    broken = _zip(tmp_path / "broken.zip", {"res_a.txt": "0,0,1,0,1,1,0,1,abc\n" * 50})
    data = bytearray(broken.read_bytes())
    start = data.find(b"res_a.txt") + len("res_a.txt")  # the local header's name, then the deflated data
    data[start: start + 8] = b"\xff" * 8
    broken.write_bytes(bytes(data))
    assert _error(broken).startswith(f"{broken}!res_a.txt: damaged member, cannot decompress (")


def test_rrc_zip_defaults_messages_and_a_normal_member_over_the_ratio_floor(tmp_path, monkeypatch):
    region = TextRegion.from_ltrb(1, 2, 30, 40, "a,b")
    data = predictions.rrc_zip_bytes({"img_1": [region]}, "gt_")
    (tmp_path / "gt.zip").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "gt.zip") as zf:
        assert zf.read("gt_img_1.txt").decode() == "1,2,30,2,30,40,1,40,a,b\n"  # quads with text by default
        assert zf.getinfo("gt_img_1.txt").compress_type == zipfile.ZIP_DEFLATED
    sub = _zip(tmp_path / "sub.zip", {"res_img_1.txt": "1,2,30,2,30,40,1,40,a,b\n"})
    preds = predictions.read_rrc_predictions(sub)  # the default box format: quads
    assert preds["img_1"].regions == (region,) and preds["img_1"].text == "a,b"
    empty = _zip(tmp_path / "empty.zip", {"notes.txt": "x"})
    assert _error(empty) == f"{empty}: no res_<image>.txt files found"
    bad = _zip(tmp_path / "bad.zip", {"res_img_1.txt": "1,2,3\n"})
    assert _error(bad).startswith(f"{bad}!res_img_1.txt:1: expected x1,y1")
    monkeypatch.setattr(predictions, "RATIO_FLOOR_BYTES", 1000)
    varied = "".join(f"{i},{2 * i},{i + 7},{i},{i + 7},{i + 9},{i},{i + 9},w{i * 7919 % 1000}\n" for i in range(100))
    normal = _zip(tmp_path / "normal.zip", {"res_img_1.txt": varied})
    assert len(read_predictions(normal)["img_1"].regions) == 100  # over the floor, a text file's ratio: read


# -- RRC line rules exactly (mutation testing of _coordinates, parse_rrc_line, _decoded_lines, _parse_lines,
#    quote_transcription, rrc_lines and read_predictions; benchmarks/RESULTS.md "Second run") ---------------
#
# test_untrusted_predictions.py checks some of these through the CLI in a subprocess; mutmut runs only
# in-process tests, and these also pin the boundaries and the exact messages.

QUAD = "10,10,60,10,60,30,10,30"


def _parse_error(content, box_format="quad"):
    with pytest.raises(EvalDataError) as info:
        parse_rrc_result(content, "r.txt", box_format)
    return str(info.value)


def test_coordinates_up_to_a_million_either_sign_and_the_first_one_out_of_range_is_named():
    edge = parse_rrc_result("-1000000,1000000,1000000,-1000000,0,0,0,0,w\n")[0]
    assert edge.points[:2] == ((-1_000_000.0, 1_000_000.0), (1_000_000.0, -1_000_000.0))
    assert parse_rrc_result("-1000000,-1000000,1000000,1000000,w\n", box_format="ltrb")[0].ltrb == (-1e6, -1e6, 1e6, 1e6)
    limit = "out of range (|value| <= 1,000,000)"
    # Only one side over the limit (positive, then negative), after valid coordinates at the limit
    # (8 characters with the sign, the length screen's own limit): the first one out of range is named.
    assert _parse_error(f"{QUAD},ok\n-1000000,1000000,1000001,0,0,0,0,0,w\n") == f"r.txt:2: coordinate 1000001 {limit}"
    assert _parse_error("1000000,-1000000,0,0,0,0,0,-1000001,w\n") == f"r.txt:1: coordinate -1000001 {limit}"
    assert _parse_error("\n\n5,5,1000001,9,w\n", "ltrb") == f"r.txt:3: coordinate 1000001 {limit}"
    # Longer than any valid coordinate: refused on its length before int() (a 400-digit number would
    # become inf in float and crash the geometry), also when shorter valid ones come first.
    assert _parse_error(f"10,10,{'9' * 400},10,60,30,10,30,w\n") == f"r.txt:1: coordinate 999999999999... {limit}"
    # The message shows 12 characters, and "..." only when the number is longer.
    assert _parse_error("10,10,123456789012,10,60,30,10,30,w\n") == f"r.txt:1: coordinate 123456789012 {limit}"
    assert _parse_error("10,10,-123456789012,10,60,30,10,30,w\n") == f"r.txt:1: coordinate -12345678901... {limit}"  # 13


def test_parse_rrc_line_defaults_boundaries_and_messages():
    with pytest.raises(EvalDataError) as info:
        predictions.parse_rrc_line("377,117,463,117,465,130,378,Word", "quad")
    assert str(info.value) == "<res>:1: expected x1,y1,x2,y2,x3,y3,x4,y4,transcription with 8 integer coordinates"
    assert _parse_error(f"{QUAD},a\n10,20,30,word\n", "ltrb") == (
        "r.txt:2: expected xmin,ymin,xmax,ymax,transcription with 4 integer coordinates")
    # The official ICDAR2013 rule refuses xmax < xmin and ymax < ymin only: a zero-width or zero-height
    # box is a valid (if useless) detection, not an error.
    flat = parse_rrc_result("10,20,10,40,a\n10,20,30,20,b\n", box_format="ltrb")
    assert [r.ltrb for r in flat] == [(10, 20, 10, 40), (10, 20, 30, 20)]
    assert _parse_error("10,20,9,40,a\n", "ltrb") == "r.txt:1: LTRB box with right < left or bottom < top"
    assert _parse_error("\n10,20,30,19,a\n", "ltrb") == "r.txt:2: LTRB box with right < left or bottom < top"
    with pytest.raises(ValueError) as info:
        predictions.parse_rrc_line(QUAD, "poly")
    assert str(info.value) == "unknown box format 'poly' (choose from quad, ltrb)"


def test_a_byte_order_mark_is_skipped_at_the_start_of_a_file_only_and_crlf_ends_are_removed(tmp_path):
    # Windows tools write a BOM and CRLF line ends; the official scripts drop the first and every "\r".
    content = f"\ufeff{QUAD},HELLO\r\n{QUAD},WORLD\r\n{QUAD},HEL\rLO\r\n"
    assert [r.text for r in parse_rrc_result(content)] == ["HELLO", "WORLD", "HELLO"]
    (tmp_path / "res_img_1.txt").write_bytes(content.encode("utf-8"))
    assert [r.text for r in read_predictions(tmp_path)["img_1"].regions] == ["HELLO", "WORLD", "HELLO"]
    sub = _zip(tmp_path / "sub.zip", {"res_img_1.txt": content.encode("utf-8")})
    assert read_predictions(sub)["img_1"].text == "HELLO WORLD HELLO"
    # A BOM anywhere else is a character in the line, which is then no box (as for the official rule).
    assert _parse_error(f"{QUAD},a\n\ufeff{QUAD},b\n").startswith("r.txt:2: expected x1,y1")


def test_more_regions_than_the_cleval_int16_index_are_refused_at_the_first_extra_line():
    line = "0,0,1,0,1,1,0,1\n"
    assert len(parse_rrc_result("\n" + line * 32767)) == 32767
    assert _parse_error("\n" + line * 32768) == "r.txt:32769: more than 32,767 regions for one image"


@pytest.mark.parametrize("text, written", [
    ('"Yes"', '"\\"Yes\\""'),
    ('"a\\"', '"\\"a\\\\\\""'),  # a quoted text ending in a backslash
    ('"C:\\\\dir\\"', '"\\"C:\\\\\\\\dir\\\\\\""'),
    ('"say \\"hi\\""', '"\\"say \\\\\\"hi\\\\\\"\\""'),
    ('a"b', 'a"b'),  # not quoted as a whole: the RRC readers take it as it is
    ("a\\b", "a\\b"),
])
def test_transcriptions_that_look_quoted_are_escaped_and_read_back_unchanged(text, written):
    assert predictions.quote_transcription(text) == written
    region = TextRegion.from_ltrb(1, 2, 3, 4, text)
    assert rrc_lines([region]) == f"1,2,3,2,3,4,1,4,{written}\n"
    assert parse_rrc_result(rrc_lines([region]))[0].text == text


def test_rrc_lines_of_no_region_is_an_empty_file_and_only_quads_are_written_as_quads():
    assert rrc_lines([]) == "" and rrc_lines([], ltrb=True) == ""
    triangle = TextRegion(((0, 0), (4, 0), (0, 4)), "t")
    with pytest.raises(ValueError) as info:
        rrc_lines([triangle])
    assert str(info.value) == "RRC quads need exactly 4 points"
    assert rrc_lines([triangle], ltrb=True) == "0,0,4,4,t\n"


def test_read_predictions_messages_and_an_ltrb_folder(tmp_path):
    assert _error(tmp_path / "missing") == f"{tmp_path / 'missing'}: predictions not found"
    (tmp_path / "preds.txt").write_text(f"{QUAD},a\n")
    assert _error(tmp_path / "preds.txt") == (f"{tmp_path / 'preds.txt'}: predictions must be a .json/.jsonl document "
                                             "file, a folder, or a .zip of res_*.txt")
    # ICDAR2013 submissions (xmin,ymin,xmax,ymax) in a folder are read in the format asked for
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "res_img_1.txt").write_text("1,2,30,40,Word\n")
    assert [(r.ltrb, r.text) for r in read_predictions(folder, "ltrb")["img_1"].regions] == [((1, 2, 30, 40), "Word")]
    assert [(r.ltrb, r.text) for r in read_predictions(_zip(tmp_path / "s.zip", {"res_img_1.txt": "1,2,30,40,Word\n"}), "ltrb")["img_1"].regions] == [((1, 2, 30, 40), "Word")]


def test_the_compression_ratio_limit_is_inclusive_and_a_zero_compressed_size_is_refused(tmp_path):
    """With the real limits: a member over the 64 KiB floor deflated exactly 100:1 is read; a header that
    claims 0 compressed bytes (a crafted zip) is refused by its ratio, without a division by zero."""
    import zlib

    varied = "".join(f"{i},{2 * i},{i + 7},{i},{i + 7},{i + 9},{i},{i + 9},w{i * 7919 % 1000}\n" for i in range(45))

    def deflated_size(data):  # what zipfile's ZIP_DEFLATED writes (raw deflate, default level)
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        return len(c.compress(data) + c.flush())

    # blank lines (skipped by the readers) raise the ratio a byte at a time until it is exactly 100
    for n in range(60_000, 90_000):
        data = (varied + "\n" * n).encode()
        if len(data) == 100 * deflated_size(data):
            break
    exact = _zip(tmp_path / "exact.zip", {"res_a.txt": data})
    info = zipfile.ZipFile(exact).getinfo("res_a.txt")
    assert info.file_size > predictions.RATIO_FLOOR_BYTES and info.file_size == 100 * info.compress_size
    assert len(read_predictions(exact)["a"].regions) == 45

    lying = _zip(tmp_path / "lying.zip", {"res_a.txt": "\n" * 70_000}, zipfile.ZIP_STORED)
    raw = bytearray(lying.read_bytes())
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 20: central + 24] = (0).to_bytes(4, "little")  # the central directory's compressed size
    lying.write_bytes(bytes(raw))
    assert _error(lying) == f"{lying}!res_a.txt: compression ratio 70,000:1, which no prediction file has (limit 100:1)"


def test_members_zipfile_cannot_open_are_refused_by_name(tmp_path):
    # Flag bits 5 (compressed patched data) and 6 (strong encryption) in the central directory make
    # zipfile raise NotImplementedError when the member is opened, after the encryption (bit 0) and
    # compression-method checks have passed.
    for bit, reason in ((0x20, "compressed patched data (flag bit 5)"), (0x40, "strong encryption (flag bit 6)")):
        path = _zip(tmp_path / f"flag{bit}.zip", {"res_a.txt": "0,0,1,0,1,1,0,1,abc\n"}, zipfile.ZIP_STORED)
        data = bytearray(path.read_bytes())
        central = data.rfind(b"PK\x01\x02")
        data[central + 8: central + 10] = bit.to_bytes(2, "little")  # general purpose flags
        path.write_bytes(bytes(data))
        assert _error(path) == f"{path}!res_a.txt: cannot read member ({reason})"
