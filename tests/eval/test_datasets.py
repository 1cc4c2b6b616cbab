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


# --- exact rules and messages (issue 18 item 4: survivors of the mutation run of eval.datasets) -------------


def _raises(call, *args, **kwargs) -> str:
    with pytest.raises(EvalDataError) as e:
        call(*args, **kwargs)
    return str(e.value)


def test_rrc_lines_after_a_blank_line_are_read_and_unnamed_content_says_gt():
    # a blank line inside a ground-truth file is skipped, not the end of the file
    regions = parse_icdar2015_gt("1,2,3,4,5,6,7,8,a\n \n9,9,19,9,19,19,9,19,b\n")
    assert [r.text for r in regions] == ["a", "b"]
    regions = parse_icdar2013_gt('1, 2, 3, 4, "a"\n\n5, 6, 7, 8, "b"\n')
    assert [r.text for r in regions] == ["a", "b"]
    assert _raises(parse_icdar2015_gt, "1,2,3\n") == "<gt>:1: expected x1,y1,x2,y2,x3,y3,x4,y4,transcription"
    assert _raises(parse_icdar2013_gt, "x\n") == '<gt>:1: expected x1, y1, x2, y2, "transcription"'


def test_icdar2013_spaces_or_commas_do_not_care_and_exact_errors():
    # ICDAR2013 gt: `l t r b "text"` with ", " in the test set and plain spaces in the training set
    spaced, commas = parse_icdar2013_gt('38 43 920 215 "Tiredness"\n10, 20, 30, 40, "###"\n')
    assert spaced.ltrb == (38, 43, 920, 215) and spaced.text == "Tiredness" and spaced.dont_care is False
    assert commas.text == "###" and commas.dont_care is True
    # a box of zero width or height is a (degenerate) box, not an error; right < left is
    assert parse_icdar2013_gt('5, 6, 5, 9, "a"\n5, 6, 9, 6, "b"\n')[1].ltrb == (5, 6, 9, 6)
    assert _raises(parse_icdar2013_gt, '1, 2, 3, 4, "a"\n1, 2, 3\n', "gt_img_4.txt") == (
        'gt_img_4.txt:2: expected x1, y1, x2, y2, "transcription"'
    )
    assert _raises(parse_icdar2013_gt, '9, 2, 3.5, 4, "a"\n', "gt_img_4.txt") == (
        "gt_img_4.txt:1: box (9, 2, 3.5, 4) has right < left or bottom < top"
    )
    assert "(1, 8, 3, 4)" in _raises(parse_icdar2013_gt, '1, 8, 3, 4, "a"\n')


def test_quoted_transcriptions_unescape_backslashes_and_quotes():
    [r] = parse_icdar2015_gt('1,2,3,4,5,6,7,8,"C:\\\\dir \\"x\\""\n')
    assert r.text == 'C:\\dir "x"'
    [r] = parse_icdar2015_gt("1,2,3,4,5,6,7,8,C:\\\\dir\n")  # unquoted: taken as it is
    assert r.text == "C:\\\\dir"


def test_rrc_folder_errors_name_the_folder_or_file_exactly(tmp_path):
    missing = tmp_path / "nowhere"
    assert _raises(load_icdar2015, missing) == f"{missing}: data folder not found"
    assert _raises(load_icdar2015, tmp_path) == f"{tmp_path}: no ground-truth files gt_*.txt found"
    (tmp_path / "gt_img_1.txt").write_bytes(b"1,2,3,4,5,6,7,8,caf\xe9\n")  # Latin-1, not UTF-8
    assert _raises(load_icdar2015, tmp_path) == f"{tmp_path / 'gt_img_1.txt'}: not UTF-8 (invalid continuation byte at byte 19)"
    (tmp_path / "gt_img_1.txt").write_text("1,2,3,4,5,6,7,8,ok\n1,2\n")
    assert _raises(load_icdar2015, tmp_path) == f"{tmp_path / 'gt_img_1.txt'}:2: expected x1,y1,x2,y2,x3,y3,x4,y4,transcription"
    (tmp_path / "gt_img_1.txt").write_text("1,2,3,4,5,6,7,8,ok\n")
    assert _raises(load_icdar2015, tmp_path) == f"{tmp_path / 'gt_img_1.txt'}: no image named img_1.* under {tmp_path}"


def test_icdar2013_folder_limit_and_images_are_only_image_files(tmp_path):
    for i in (1, 2):
        (tmp_path / f"gt_img_{i}.txt").write_text(f'1, 2, 30, 40, "w{i}"\n')
        Image.new("RGB", (50, 50)).save(tmp_path / f"img_{i}.png")
    # a non-image file with the image's stem, sorted before it, is not taken for the image
    (tmp_path / "img_1.json").write_text("{}")
    (tmp_path / "img_1.PNG.d").mkdir()
    assert [s.key for s in load_icdar2013(tmp_path, max_images=1)] == ["img_1"]
    assert [s.key for s in load_dataset("ICDAR2013", tmp_path, 1)] == ["img_1"]
    samples = load_icdar2013(tmp_path)
    assert [s.image_path for s in samples] == [tmp_path / "img_1.png", tmp_path / "img_2.png"]


def test_unknown_dataset_message_lists_the_names():
    assert _raises(load_dataset, "coco", "x") == "coco: unknown data set (choose from icdar2015, icdar2013, cord, funsd)"


def test_cord_annotation_rules_and_messages():
    assert _raises(parse_cord_annotation, {"meta": {}}) == "<cord>: not a CORD annotation (no valid_line)"
    assert _raises(parse_cord_annotation, [], "r.json") == "r.json: not a CORD annotation (no valid_line)"
    ann = cord_annotation()
    ann["valid_line"].insert(1, {"category": "menu.cnt"})  # a line without words
    del ann["meta"]
    regions, text, w, h = parse_cord_annotation(ann)
    assert text == "2 Coke\n12,000" and (w, h) == (None, None)
    assert all(r.dont_care is False for r in regions)  # CORD has no do-not-care words
    ann["meta"] = {"image_size": {"width": "640"}}
    assert parse_cord_annotation(ann)[2:] == (640, None)
    ann["meta"] = {"image_size": {"height": 480}}
    assert parse_cord_annotation(ann)[2:] == (None, 480)
    del ann["valid_line"][2]["words"][0]["text"]
    assert _raises(parse_cord_annotation, ann, "r.json") == "r.json: valid_line[2].words[0]: missing or bad 'text'"


def _cord_folder(tmp_path, names):
    (tmp_path / "json").mkdir()
    (tmp_path / "image").mkdir()
    for name in names:
        (tmp_path / "json" / f"{name}.json").write_text(json.dumps(cord_annotation()))
        Image.new("RGB", (100, 200)).save(tmp_path / "image" / f"{name}.png")


def test_cord_folder_order_limit_fields_and_messages(tmp_path):
    assert _raises(load_cord, tmp_path) == f"{tmp_path}: no CORD annotations (json/*.json or *.parquet) found"
    _cord_folder(tmp_path, ["r_10", "r_2"])
    (tmp_path / "other.parquet").write_bytes(b"not parquet")  # JSON annotations win over parquet files
    samples = load_cord(tmp_path)
    assert [s.key for s in samples] == ["r_2", "r_10"]  # natural order
    s = samples[0]
    assert s.image_path == tmp_path / "image" / "r_2.png" and s.image_bytes is None
    assert s.text == "2 Coke\n12,000" and (s.width, s.height) == (100, 200)
    assert [s.key for s in load_cord(tmp_path, max_images=1)] == ["r_2"]
    assert [s.key for s in load_dataset("cord", tmp_path, 1)] == ["r_2"]
    (tmp_path / "image" / "r_10.png").unlink()
    assert _raises(load_cord, tmp_path) == f"{tmp_path / 'json' / 'r_10.json'}: no image named r_10.* under {tmp_path}"
    bad = cord_annotation()
    bad["valid_line"][0]["words"][1]["quad"]["x1"] = "left"
    (tmp_path / "json" / "r_2.json").write_text(json.dumps(bad))
    assert _raises(load_cord, tmp_path) == (
        f"{tmp_path / 'json' / 'r_2.json'}: valid_line[0].words[1]: missing or bad could not convert string to float: 'left'"
    )
    (tmp_path / "json" / "r_2.json").write_bytes(b'{"valid_line": "\xff"}')
    assert _raises(load_cord, tmp_path) == f"{tmp_path / 'json' / 'r_2.json'}: not UTF-8 (invalid start byte at byte 16)"


def _png(size=(100, 200)) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    Image.new("RGB", size).save(buf, format="PNG")
    return buf.getvalue()


def test_cord_parquet_keys_limit_fields_and_messages(tmp_path, require_module):
    pa = require_module("pyarrow")
    pq = require_module("pyarrow.parquet")
    ann = cord_annotation()
    path = tmp_path / "test-00000-of-00001.parquet"

    def write(rows, image_type=None):
        images = [r[0] for r in rows]
        table = pa.table({
            "image": pa.array(images, type=image_type) if image_type else images,
            "ground_truth": [r[1] for r in rows],
        })
        pq.write_table(table, path)

    data = _png()
    write([({"bytes": data, "path": None}, json.dumps(ann))] * 3)
    samples = load_cord(tmp_path)
    assert [s.key for s in samples] == ["test-00000-of-00001_00000", "test-00000-of-00001_00001", "test-00000-of-00001_00002"]
    assert samples[1].text == "2 Coke\n12,000" and (samples[1].width, samples[1].height) == (100, 200)
    assert len(load_cord(tmp_path, max_images=2)) == 2
    assert len(load_dataset("cord", tmp_path, 1)) == 1
    write([({"bytes": data, "path": None}, json.dumps(ann)), ({"bytes": data, "path": None}, "{broken")])
    assert _raises(load_cord, tmp_path).startswith(f"{path} row 1: invalid ground_truth JSON: Expecting property name")
    bad = cord_annotation()
    del bad["valid_line"][0]["words"][0]["quad"]
    write([({"bytes": data, "path": None}, json.dumps(bad))])
    assert _raises(load_cord, tmp_path) == f"{path} row 0: valid_line[0].words[0]: missing or bad 'quad'"
    write([({"bytes": None, "path": "x.png"}, json.dumps(ann))])
    assert _raises(load_cord, tmp_path) == f"{path} row 0: row has no image bytes"
    write([(data, json.dumps(ann))], pa.binary())  # an image column of plain bytes, not Hugging Face's struct
    assert _raises(load_cord, tmp_path) == f"{path} row 0: row has no image bytes"


def test_cord_parquet_without_pyarrow_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    (tmp_path / "b.parquet").write_bytes(b"PAR1")
    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import pyarrow.parquet now raises ImportError
    assert _raises(load_cord, tmp_path) == (
        f"{tmp_path / 'a.parquet'}: reading CORD parquet files needs pyarrow (pip install pyarrow)"
    )


def test_funsd_annotation_rules_and_messages():
    assert _raises(parse_funsd_annotation, {}) == "<funsd>: not a FUNSD annotation (no form list)"
    assert _raises(parse_funsd_annotation, {"form": {}}, "f.json") == "f.json: not a FUNSD annotation (no form list)"
    ann = {"form": [{"words": [{"box": [1, 2, 30, 12], "text": " Date: "}, {"box": [32, 2, 50, 12], "text": "12/3"}]},
                    {"label": "other"},  # an entity without words
                    {"words": [{"box": [1, 20, 30, 30], "text": "Name"}]}]}
    regions, text = parse_funsd_annotation(ann)
    assert text == "Date: 12/3\nName"
    assert [r.text for r in regions] == ["Date:", "12/3", "Name"] and not any(r.dont_care for r in regions)
    ann["form"][2]["words"][0]["box"] = [1, 20, 30]
    assert _raises(parse_funsd_annotation, ann, "f.json") == (
        "f.json: form[2].words[0]: missing or bad box/text (not enough values to unpack (expected 4, got 3))"
    )


def _funsd_folder(tmp_path, names):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    for name in names:
        ann = {"form": [{"words": [{"box": [1, 2, 30, 12], "text": name}]}]}
        (tmp_path / "annotations" / f"{name}.json").write_text(json.dumps(ann))
        Image.new("RGB", (60, 40)).save(tmp_path / "images" / f"{name}.png")


def test_funsd_folder_order_limit_fields_and_messages(tmp_path):
    assert _raises(load_funsd, tmp_path) == f"{tmp_path}: no FUNSD annotations (annotations/*.json) found"
    _funsd_folder(tmp_path, ["f_10", "f_9"])
    samples = load_funsd(tmp_path)
    assert [s.key for s in samples] == ["f_9", "f_10"]  # natural order
    # annotations/f_9.json sorts before images/f_9.png: the image index takes image files only
    assert samples[0].image_path == tmp_path / "images" / "f_9.png"
    assert samples[0].text == "f_9" and samples[0].regions[0].ltrb == (1, 2, 30, 12)
    assert [s.key for s in load_funsd(tmp_path, max_images=1)] == ["f_9"]
    assert [s.key for s in load_dataset("funsd", tmp_path, 1)] == ["f_9"]
    (tmp_path / "images" / "f_10.png").unlink()
    f10 = tmp_path / "annotations" / "f_10.json"
    assert _raises(load_funsd, tmp_path) == f"{f10}: no image named f_10.* under {tmp_path}"
    f10.write_text('{"form": [{"words": [{"box": [1, 2], "text": "x"}]}]}')
    assert _raises(load_funsd, tmp_path).startswith(f"{f10}: form[0].words[0]: missing or bad box/text")
    f10.write_text('{"form": [],\n "x": }')
    assert _raises(load_funsd, tmp_path) == f"{f10}:2: invalid JSON: Expecting value"
    f10.write_bytes(b'{"form": "\xe9"}')
    assert _raises(load_funsd, tmp_path) == f"{f10}: not UTF-8 (invalid continuation byte at byte 10)"


def test_open_sample_image_from_bytes_or_path_as_rgb(tmp_path):
    from varco_ocr.eval.datasets import open_sample_image
    from varco_ocr.eval.regions import Sample

    grey = tmp_path / "g.png"
    Image.new("L", (7, 5), 200).save(grey)
    im = open_sample_image(Sample("g", grey, ()))
    assert im.mode == "RGB" and im.size == (7, 5) and im.getpixel((0, 0)) == (200, 200, 200)
    im = open_sample_image(Sample("row", None, (), image_bytes=_png((3, 4))))
    assert im.mode == "RGB" and im.size == (3, 4)
    # bytes win over a path (parquet rows have no path; a sample with both reads what was loaded)
    assert open_sample_image(Sample("both", grey, (), image_bytes=_png((3, 4)))).size == (3, 4)
    assert _raises(open_sample_image, Sample("k", None, ())) == "k: sample has no image"
    broken = tmp_path / "b.png"
    broken.write_bytes(b"not a png")
    assert _raises(open_sample_image, Sample("b", broken, ())).startswith(f"{broken}: cannot read image: cannot identify")
    assert _raises(open_sample_image, Sample("row_7", None, (), image_bytes=b"junk")).startswith(
        "row_7: cannot read image: cannot identify"
    )


def _cord_with(**changes):
    ann = cord_annotation()
    for dotted, value in changes.items():
        target, *keys, last = [ann, *dotted.split("__")]
        for k in keys:
            target = target[int(k)] if isinstance(target, list) else target[k]
        target[int(last) if isinstance(target, list) else last] = value
    return ann


@pytest.mark.parametrize("ann, message", [
    ({"valid_line": 5}, "valid_line: expected a list, got int"),
    ({"valid_line": None}, "valid_line: expected a list, got NoneType"),
    ({"valid_line": ["x"]}, "valid_line[0]: expected an object, got str"),
    (_cord_with(valid_line__1__words={"quad": {}}), "valid_line[1].words: expected a list, got dict"),
    (_cord_with(meta="x"), "meta: expected an object, got str"),
    (_cord_with(meta__image_size=[640, 480]), "meta.image_size: expected an object, got list"),
    (_cord_with(meta__image_size={"width": "abc"}), "meta.image_size.width: expected a whole number of pixels, got 'abc'"),
    (_cord_with(meta__image_size={"height": 12.5}), "meta.image_size.height: expected a whole number of pixels, got 12.5"),
    (_cord_with(meta__image_size={"width": 0}), "meta.image_size.width: expected a whole number of pixels, got 0"),
    (_cord_with(meta__image_size={"width": True}), "meta.image_size.width: expected a whole number of pixels, got True"),
    (_cord_with(valid_line__0__words__1__quad__x3="nan"), "valid_line[0].words[1]: missing or bad coordinate 'nan' is not finite"),
    (_cord_with(valid_line__0__words__0__quad__y2=float("inf")), "valid_line[0].words[0]: missing or bad coordinate inf is not finite"),
])
def test_a_cord_annotation_of_the_wrong_shape_is_a_one_line_data_error(ann, message):
    """Hand-edited or truncated annotations: each wrong shape is named by its place in the file
    (before, most of these raised AttributeError/ValueError/TypeError from inside the reader)."""
    assert _raises(parse_cord_annotation, ann, "r.json") == f"r.json: {message}"


@pytest.mark.parametrize("form, message", [
    (["x"], "form[0]: expected an object, got str"),
    ([{"words": 3}], "form[0].words: expected a list, got int"),
    ([{"words": [{"box": "1234", "text": "a"}]}], "form[0].words[0]: missing or bad box/text (box '1234' is not a list)"),
    ([{"words": [{"box": [1, 2, "inf", 4], "text": "a"}]}], "form[0].words[0]: missing or bad box/text (coordinate 'inf' is not finite)"),
    ([{"words": [{"box": [1, 2, True, 4], "text": "a"}]}], "form[0].words[0]: missing or bad box/text (a boolean is not a coordinate)"),
])
def test_a_funsd_annotation_of_the_wrong_shape_is_a_one_line_data_error(form, message):
    assert _raises(parse_funsd_annotation, {"form": form}, "f.json") == f"f.json: {message}"


def test_absent_or_null_word_lists_are_entities_without_words():
    ann = cord_annotation()
    ann["valid_line"][1]["words"] = None
    assert parse_cord_annotation(ann)[1] == "2 Coke"
    assert parse_funsd_annotation({"form": [{"words": None}, {"label": "header"}]}) == ([], "")


def test_a_one_pixel_image_size_is_a_size():
    ann = cord_annotation()
    ann["meta"] = {"image_size": {"width": 1, "height": "1"}}
    assert parse_cord_annotation(ann)[2:] == (1, 1)
