"""The `varco-ocr` command as a user runs it: real processes, the tiny model, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from schema_check import assert_valid_document

REPO = Path(__file__).resolve().parents[1]
# every JSON a test here writes under its tmp_path is validated against the shipped schema afterwards
pytestmark = pytest.mark.usefixtures("documents_are_schema_valid")
ANSWER = "<char>백범로</char><bbox>0.172, 0.266, 0.328, 0.341</bbox>\n<char>Apt</char><bbox>0.28, 0.601, 0.327, 0.651</bbox>"
FAST = ["--min-long-side", "384", "--max-grid", "2", "--max-new-tokens", "16"]


def run(*args, stdin=None, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "varco_ocr", *map(str, args)],
        capture_output=True, text=True, input=stdin, cwd=REPO, env={**os.environ, **(env or {})}, timeout=600,
    )
    if "--json" in map(str, args) and proc.returncode == 0:
        _validate_documents_on_stdout(proc.stdout)
    return proc


def _validate_documents_on_stdout(stdout: str) -> None:
    """Documents printed with --json (one indented, or one per line) must be schema-valid too."""
    try:
        printed = [json.loads(stdout)]
    except json.JSONDecodeError:
        printed = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for data in printed:
        if isinstance(data, dict) and "pages" in data:  # `parse --grounding --json` prints boxes, not a document
            assert_valid_document(data, "stdout")


def assert_one_line_error(proc, code):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("varco-ocr:")]
    assert lines, proc.stderr
    return lines


def test_help_lists_subcommands_with_examples():
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("ocr", "parse", "ground"):
        assert cmd in proc.stdout
    for cmd in ("ocr", "parse", "ground"):
        assert "Example:" in run(cmd, "--help").stdout


def test_parse_maps_issue_example_to_pixels(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(ANSWER, encoding="utf-8")
    image = tmp_path / "page.png"
    Image.new("RGB", (1000, 500), "white").save(image)
    proc = run("parse", raw, "--image", image, "--json")
    assert proc.returncode == 0, proc.stderr
    words = json.loads(proc.stdout)["pages"][0]["words"]
    got = [(w["text"], w["bbox"]) for w in words]
    expected = [("백범로", [172, 133, 328, 170]), ("Apt", [280, 300, 327, 325])]
    for (t, b), (te, be) in zip(got, expected):
        assert t == te and all(abs(x - y) <= 1 for x, y in zip(b, be))
    # The same normalised answer for an image the model saw upscaled: same original pixels.
    upscaled = tmp_path / "small.png"
    Image.new("RGB", (100, 50), "white").save(upscaled)
    proc = run("parse", raw, "--image", upscaled, "--json")
    small = [w["bbox"] for w in json.loads(proc.stdout)["pages"][0]["words"]]
    assert small == [[17, 13, 33, 17], [28, 30, 33, 33]]
    # stdin and --size work too; plain text is the reading-order text
    proc = run("parse", "-", "--size", "1000x500", stdin=ANSWER)
    assert proc.stdout.split() == ["백범로", "Apt"]


def test_parse_grounding(tmp_path):
    proc = run("parse", "-", "--size", "200x100", "--grounding", "--json",
               stdin="<obj>sign</obj><bbox>0.1, 0.2, 0.3, 0.4<delim>0.5, 0.5, 1.0, 1.0</bbox>")
    assert json.loads(proc.stdout) == [{"phrase": "sign", "bbox": [20, 20, 60, 40]}, {"phrase": "sign", "bbox": [100, 50, 200, 100]}]


@pytest.mark.slow
def test_ocr_json_with_the_taught_model(taught, samples):
    proc = run(samples / "receipt.png", "--json", "--keep-raw", *taught.cli_args)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["version"] and doc["model"] == str(taught.path)
    (page,) = doc["pages"]
    assert (page["width"], page["height"]) == Image.open(samples / "receipt.png").size == (440, 520)
    assert [(w["text"], w["bbox"]) for w in page["words"]] == taught.words("receipt")
    assert all(0.5 < w["confidence"] <= 1.0 for w in page["words"])
    assert page["text"] == "카페 마포점\n서울특별시 마포구 백범로 35" and not page["truncated"]
    assert page["raw"] == taught.page("receipt").answer  # the answer as the model gave it (bottom-right first)
    # plain text on stdout without --json: the reading-order text
    text = run(samples / "receipt.png", *taught.cli_args)
    assert text.returncode == 0 and text.stdout == "카페 마포점\n서울특별시 마포구 백범로 35\n"


@pytest.mark.slow
def test_an_image_gives_one_document_to_stdout_or_to_an_output_folder(taught, tmp_path):
    """issue 16 item 13: the page's dpi is the file's recorded resolution (null without one), and the
    metadata is the same, whether the document is printed (--json) or written (-o, json). The pages are
    two the taught model reads, so the documents compared hold words, not two empty pages."""
    with_dpi, without = tmp_path / "scan144.png", tmp_path / "plain.png"
    Image.new("RGB", (384, 160), "white").save(with_dpi, dpi=(144, 144))
    Image.new("RGB", (384, 96), "white").save(without)
    printed = run(with_dpi, without, "--json", *taught.cli_args)
    assert printed.returncode == 0, printed.stderr
    docs = [json.loads(line) for line in printed.stdout.splitlines() if line.strip()]
    written = run(with_dpi, without, "-o", tmp_path / "out", "--format", "json", *taught.cli_args)
    assert written.returncode == 0, written.stderr
    files = [json.loads((tmp_path / "out" / f"{p.stem}.json").read_text(encoding="utf-8")) for p in (with_dpi, without)]
    assert docs == files
    assert [[(w["text"], w["bbox"]) for w in d["pages"][0]["words"]] for d in docs] == [
        taught.words("blank-384x160"), taught.words("blank-384x96")]
    assert [round(d["pages"][0]["dpi"] or 0) for d in docs] == [144, 0]
    assert [d["metadata"] for d in docs] == [{"source_path": str(p.resolve())} for p in (with_dpi, without)]


@pytest.mark.slow
def test_several_inputs_to_output_folder_and_bad_file_exit_code(taught, samples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "out"
    proc = run("ocr", samples / "receipt.png", bad, samples / "dense-page.png", "-o", out, "--json",
               "--batch-size", "2", *taught.cli_args)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "broken.jpg" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dense-page.json", "receipt.json", "varco-ocr.log.jsonl"]
    for name in ("receipt", "dense-page"):
        doc = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert doc["source"].endswith(f"{name}.png")
        assert [(w["text"], w["bbox"]) for w in doc["pages"][0]["words"]] == taught.words(name)


def test_missing_model_folder_is_named_as_such(samples, tmp_path):
    # The folder does not exist: not the hub's "Repo id must use alphanumeric chars", not "pass --model PATH".
    for extra in ([], ["-o", tmp_path / "out"]):  # the stdout path and the batch runner say the same
        proc = run(samples / "receipt.png", "--model", "./no-such-model", *extra)
        assert assert_one_line_error(proc, 2) == ["varco-ocr: no such model folder: ./no-such-model"]


@pytest.mark.parametrize("extra", [[], ["-o", "{tmp}/out"]])  # stdout path, and the batch runner (which wraps the error)
def test_uncached_hub_model_offline_names_the_download_not_the_variable(samples, tmp_path, extra):
    extra = [a.format(tmp=tmp_path) for a in extra]
    proc = run(samples / "receipt.png", "--model", "varco-ocr-tests/not-a-cached-model", *extra, env={"HF_HUB_OFFLINE": "1"})
    assert assert_one_line_error(proc, 2) == [
        "varco-ocr: cannot load model 'varco-ocr-tests/not-a-cached-model': it is not in the Hugging Face cache and "
        "HF_HUB_OFFLINE is set; download the weights first (`hf download varco-ocr-tests/not-a-cached-model`, with a "
        "network), or pass --model PATH for a local model folder"]


def test_missing_input_file(tmp_path):
    proc = run(tmp_path / "nope.png", "--model", tmp_path)
    (line,) = assert_one_line_error(proc, 1)
    assert "nope.png" in line and "no such file" in line


def test_a_file_url_reads_the_local_file_it_names(taught, samples, tmp_path):
    """A file:// URL (as file managers copy them; spaces percent-escaped) reads the file it names, and -o
    accepts one too; before, the URL became the relative path 'file:/...' and was reported missing."""
    folder = tmp_path / "scans 2026"
    folder.mkdir()
    image = folder / "receipt.png"
    image.write_bytes((samples / "receipt.png").read_bytes())
    out = tmp_path / "out put"
    proc = run(image.as_uri(), "-o", out.as_uri(), "--format", "json", *taught.cli_args)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "receipt.json").read_text())
    assert [(w["text"], w["bbox"]) for w in doc["pages"][0]["words"]] == taught.words("receipt")
    missing = run("file://localhost" + (tmp_path / "no such.png").as_uri()[len("file://"):], "--model", tmp_path)
    (line,) = assert_one_line_error(missing, 1)
    assert str(tmp_path / "no such.png") in line and "no such file" in line


def test_a_file_url_of_another_host_is_refused_in_one_line(tmp_path):
    proc = run("file://scanner.example/share/a.png", "--model", tmp_path)
    assert assert_one_line_error(proc, 2) == [
        "varco-ocr: file://scanner.example/share/a.png: a file:// URL on another host (scanner.example); give a "
        "local path or mount it"]


def test_usage_error_exit_code():
    proc = run("parse", "-", stdin=ANSWER)  # neither --image nor --size
    assert_one_line_error(proc, 2)


def invoke(*args):
    from typer.testing import CliRunner

    from varco_ocr.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


CUT = ["--min-long-side", "384", "--max-grid", "2", "--max-new-tokens", "4"]  # the tiny model never ends in 4 tokens


@pytest.mark.slow
def test_text_mode_names_truncated_pages_on_stderr(tiny_model_dir, samples):
    from varco_ocr.cli import TRUNCATED_NOTE

    text = invoke("ocr", samples / "receipt.png", "--model", tiny_model_dir, *CUT)
    assert text.exit_code == 0, text.output
    assert [l for l in text.stderr.splitlines() if l.startswith("varco-ocr:")] == [
        f"varco-ocr: {samples / 'receipt.png'}: page 1: {TRUNCATED_NOTE}"]
    assert "--split-truncated" in TRUNCATED_NOTE
    as_json = invoke("ocr", samples / "receipt.png", "--json", "--model", tiny_model_dir, *CUT)
    assert json.loads(as_json.stdout)["pages"][0]["truncated"] is True  # the JSON says it itself
    assert "varco-ocr:" not in as_json.stderr


@pytest.mark.slow
def test_ground_at_the_token_limit_is_truncated(tiny_model_dir, samples):
    # Before: "truncated": false, since the flag came from the text alone.
    res = invoke("ground", samples / "receipt.png", "the total", "--json", "--model", tiny_model_dir, *CUT)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["truncated"] is True
    text = invoke("ground", samples / "receipt.png", "the total", "--model", tiny_model_dir, *CUT)
    assert [l for l in text.stderr.splitlines() if l.startswith("varco-ocr:")] == [
        "varco-ocr: the answer was cut short at 4 tokens (or by the loop guard), boxes may be missing; "
        "raise --max-new-tokens"]


@pytest.mark.slow
def test_ask_text_answer_at_the_token_limit_is_said_on_stderr(tiny_model_dir, samples):
    args = ["ask", samples / "receipt.png", "What is the total?", "--model", tiny_model_dir, *CUT]
    text, as_json = invoke(*args), invoke(*args, "--json")
    assert json.loads(as_json.stdout)["hit_token_limit"] is True
    assert [l for l in text.stderr.splitlines() if l.startswith("varco-ocr:")] == [
        "varco-ocr: the answer stopped at the token limit (4) and may be incomplete; raise --max-new-tokens"]
    assert "varco-ocr:" not in as_json.stderr


def run_with_stderr_on_a_terminal(*args) -> tuple[str, str]:
    """Run varco-ocr with stdout piped and stderr on a pseudo-terminal; (stdout, what the terminal got)."""
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "varco_ocr", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=slave, cwd=REPO, env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:  # drain the terminal so a chatty child never blocks on a full pty buffer
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = proc.communicate(timeout=600)
    reader.join(30)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks)
    return out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_on_a_terminal_and_nothing_when_piped(taught, samples):
    args = [samples / "receipt.png", samples / "dense-page.png", *taught.cli_args]
    out, terminal = run_with_stderr_on_a_terminal(*args)
    # the taught words, whole: the bar drawn on the terminal never reaches (or cuts into) the text
    assert out == (f"==> {samples / 'receipt.png'} <==\n카페 마포점\n서울특별시 마포구 백범로 35\n"
                   f"==> {samples / 'dense-page.png'} <==\nVARCO-VISION-2.0 reads text and says\n")
    assert "2/2" in terminal and "pages" in terminal and "tokens/s" in terminal
    piped = run(*args)
    assert piped.returncode == 0, piped.stderr
    assert "tokens/s" not in piped.stderr and "2/2" not in piped.stderr
    # transformers' weight-loading bar follows the same rule (before: two "Loading weights" lines in piped stderr).
    assert "Loading weights" not in piped.stderr
    assert piped.stdout == out  # the progress never reaches the output


# -- issue 15 item 5: images on the command line go through the batch runner, as documents do ----------


def _pdf_of(image_path: Path, pdf_path: Path) -> Path:
    """A one-page PDF showing the image at 72 dpi: rendered at --dpi 72 it gives back the same pixels."""
    import pymupdf

    width, height = Image.open(image_path).size
    doc = pymupdf.open()
    page = doc.new_page(width=width, height=height)
    page.insert_image(page.rect, filename=str(image_path))
    doc.save(pdf_path)
    doc.close()
    return pdf_path


@pytest.mark.slow
def test_an_image_and_a_one_page_pdf_of_it_give_the_same_document(taught, samples, tmp_path):
    image = samples / "receipt.png"
    pdf = _pdf_of(image, tmp_path / "receipt.pdf")
    proc = run(image, pdf, "--json", "--dpi", "72", *taught.cli_args)
    assert proc.returncode == 0, proc.stderr
    from_image, from_pdf = (json.loads(line) for line in proc.stdout.splitlines() if line.strip())
    assert [w["text"] for w in from_image["pages"][0]["words"]] == [t for t, _ in taught.words("receipt")]
    assert (from_image["source"], from_pdf["source"]) == (str(image), str(pdf))
    # apart from what says where the page came from (the file, and a PDF's dpi and point geometry)
    assert from_pdf["metadata"] == {**from_image["metadata"], "source_path": str(pdf.resolve()), "dpi": 72.0}
    image_page, pdf_page = from_image["pages"][0], from_pdf["pages"][0]
    assert image_page.pop("dpi") is not None and pdf_page.pop("dpi") == 72.0
    assert all(w.pop("bbox_pt") == [float(v) for v in w["bbox"]] for w in pdf_page["words"])  # 72 dpi: 1 px = 1 pt
    assert image_page == pdf_page
    assert {k: v for k, v in from_image.items() if k not in ("source", "metadata", "pages")} == \
        {k: v for k, v in from_pdf.items() if k not in ("source", "metadata", "pages")}


@pytest.mark.slow
def test_a_broken_image_among_printed_ones_is_one_line_and_no_document(taught, samples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    proc = run(samples / "receipt.png", bad, samples / "dense-page.png", "--json", *taught.cli_args)
    assert assert_one_line_error(proc, 1) == [f"varco-ocr: {bad}: not an image file Pillow can read"]
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [d["source"] for d in docs] == [str(samples / "receipt.png"), str(samples / "dense-page.png")]
    # each document holds its own page's words: the failed file shifted no page into another document
    assert [[(w["text"], w["bbox"]) for w in d["pages"][0]["words"]] for d in docs] == [
        taught.words("receipt"), taught.words("dense-page")]


@pytest.mark.slow
def test_images_and_documents_printed_share_the_reading_bar_on_a_terminal(tiny_model_dir, samples):
    """One runner for images and documents: the reading bar counts the PDF's pages with the image
    (before, a PDF sent everything through the batch runner with no progress at all when printing)."""
    args = [samples / "receipt.png", samples / "three-pages.pdf", "--dpi", "50", "--model", tiny_model_dir, *FAST]
    out, terminal = run_with_stderr_on_a_terminal(*args)
    assert "4/4" in terminal and "pages" in terminal and "tokens/s" in terminal
    piped = run(*args)
    assert piped.returncode == 0, piped.stderr
    assert "tokens/s" not in piped.stderr and "4/4" not in piped.stderr and piped.stdout == out
