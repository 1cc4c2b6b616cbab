import json

import pytest
from PIL import Image

from varco_ocr.eval.datasets import (
    load_cord,
    load_dataset,
    load_funsd,
    load_icdar2013,
    load_icdar2015,
    parse_cord_annotation,
    parse_funsd_annotation,
    parse_icdar2013_gt,
    parse_icdar2015_gt,
)
from varco_ocr.eval.regions import EvalDataError


def test_icdar2015_line_with_commas_bom_crlf_and_dont_care(tmp_path):
    raw = "\ufeff1,2,3,4,5,6,7,8,Hello, world\r\n10,20,30,20,30,40,10,40,###\r\n\r\n"
    (tmp_path / "gt_img_7.txt").write_bytes(raw.encode("utf-8"))
    Image.new("RGB", (50, 50)).save(tmp_path / "img_7.jpg")
    [sample] = load_icdar2015(tmp_path)
    assert sample.key == "img_7"
    first, second = sample.regions
    assert first.points == ((1, 2), (3, 4), (5, 6), (7, 8))
    assert first.text == "Hello, world" and not first.dont_care
    assert second.dont_care and second.text == "###"
    assert sample.text == "Hello, world"


def test_icdar2015_malformed_line_names_file_and_line():
    with pytest.raises(EvalDataError, match=r"gt_img_3.txt:2: expected"):
        parse_icdar2015_gt("1,2,3,4,5,6,7,8,ok\n1,2,3,4,five,6,7,8,bad\n", "gt_img_3.txt")


def test_icdar2015_separate_folders_and_missing_image(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "gt" / "gt_img_2.txt").write_text("0,0,9,0,9,9,0,9,a\n")
    (tmp_path / "gt" / "gt_img_10.txt").write_text("0,0,9,0,9,9,0,9,b\n")
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "img_2.jpg")
    with pytest.raises(EvalDataError, match="no image named img_10"):
        load_icdar2015(tmp_path)
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "img_10.jpg")
    samples = load_icdar2015(tmp_path)
    assert [s.key for s in samples] == ["img_2", "img_10"]  # natural order
    assert [s.key for s in load_icdar2015(tmp_path, max_images=1)] == ["img_2"]


def test_icdar2013_quoted_text():
    regions = parse_icdar2013_gt('38, 43, 920, 215, "Tiredness"\n275, 264, 665, 450, "say \\"hi\\", ok"\n')
    assert regions[0].ltrb == (38, 43, 920, 215)
    assert regions[0].points == ((38, 43), (920, 43), (920, 215), (38, 215))
    assert regions[1].text == 'say "hi", ok'
    with pytest.raises(EvalDataError, match=":1: box"):
        parse_icdar2013_gt('50, 43, 20, 215, "x"\n', "gt_img_1.txt")


def test_icdar2013_folder(tmp_path):
    (tmp_path / "gt_img_1.txt").write_text('1, 2, 30, 40, "Hi"\n')
    Image.new("RGB", (50, 50)).save(tmp_path / "img_1.jpg")
    [s] = load_dataset("icdar2013", tmp_path)
    assert s.regions[0].text == "Hi"


def cord_annotation():
    quad = lambda x, y: {"x1": x, "y1": y, "x2": x + 10, "y2": y, "x3": x + 10, "y3": y + 5, "x4": x, "y4": y + 5}
    return {
        "valid_line": [
            {"words": [{"quad": quad(0, 0), "text": "2", "is_key": 0}, {"quad": quad(20, 0), "text": "Coke"}], "category": "menu.nm"},
            {"words": [{"quad": quad(0, 10), "text": "12,000"}], "category": "total.total_price"},
        ],
        "meta": {"image_size": {"width": 100, "height": 200}},
    }


def test_cord_annotation_and_folder(tmp_path):
    regions, text, w, h = parse_cord_annotation(cord_annotation())
    assert [r.text for r in regions] == ["2", "Coke", "12,000"]
    assert regions[1].points == ((20, 0), (30, 0), (30, 5), (20, 5))
    assert text == "2 Coke\n12,000" and (w, h) == (100, 200)
    (tmp_path / "json").mkdir()
    (tmp_path / "image").mkdir()
    (tmp_path / "json" / "receipt_00000.json").write_text(json.dumps(cord_annotation()))
    Image.new("RGB", (100, 200)).save(tmp_path / "image" / "receipt_00000.png")
    [s] = load_cord(tmp_path)
    assert s.key == "receipt_00000" and len(s.regions) == 3 and s.width == 100


def test_cord_bad_word_is_reported(tmp_path):
    bad = cord_annotation()
    del bad["valid_line"][1]["words"][0]["quad"]["y3"]
    with pytest.raises(EvalDataError, match=r"valid_line\[1\]\.words\[0\]"):
        parse_cord_annotation(bad, "x.json")
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(EvalDataError, match=r"r.json:1: invalid JSON"):
        load_cord(tmp_path)


def test_funsd_annotation_drops_empty_words():
    ann = {"form": [{"words": [{"box": [1, 2, 30, 12], "text": "Date:"}, {"box": [40, 2, 60, 12], "text": ""}]},
                    {"words": [{"box": [1, 20, 30, 30], "text": "Name"}]}]}
    regions, text = parse_funsd_annotation(ann)
    assert [r.text for r in regions] == ["Date:", "Name"]
    assert regions[0].ltrb == (1, 2, 30, 12)
    assert text == "Date:\nName"


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(EvalDataError, match="unknown data set"):
        load_dataset("coco", tmp_path)


def test_shared_icdar2015_sample_loads_every_line(icdar2015_sample):
    samples = load_icdar2015(icdar2015_sample)
    assert len(samples) == 50
    n_lines = sum(
        1
        for p in (icdar2015_sample / "gt").glob("gt_img_*.txt")
        for line in p.read_text(encoding="utf-8-sig").splitlines()
        if line.strip()
    )
    assert sum(len(s.regions) for s in samples) == n_lines
    assert all(s.image_path is not None and s.image_path.exists() for s in samples)
    assert any(r.dont_care for s in samples for r in s.regions)


def test_shared_funsd_loads(funsd_test):
    samples = load_funsd(funsd_test)
    assert len(samples) == 50
    assert sum(len(s.regions) for s in samples) > 5000


def test_cord_parquet_rows(tmp_path):
    import io as _io

    buf = _io.BytesIO()
    Image.new("RGB", (100, 200)).save(buf, format="PNG")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (tmp_path / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
        with pytest.raises(EvalDataError, match="needs pyarrow"):
            load_cord(tmp_path)
        return
    table = pa.table({
        "image": [{"bytes": buf.getvalue(), "path": None}],
        "ground_truth": [json.dumps(cord_annotation())],
    })
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    [s] = load_cord(tmp_path)
    assert s.image_path is None and s.image_bytes == buf.getvalue()
    assert [r.text for r in s.regions] == ["2", "Coke", "12,000"]
