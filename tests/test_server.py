"""The server backend against real servers on loopback.

- A real ``transformers serve`` process serving tiny models (one with VARCO's tags as ordinary tokens, so
  they survive that server's special-token stripping, and the same weights with the tags special, as in
  VARCO's own tokenizer), driven through the CLI's ``--server``; its words and boxes equal the local
  engine's for the same weights and inputs.
- A small in-process OpenAI-compatible HTTP server (http.server in a thread) for the faults a real
  server cannot be made to show on demand: killed mid-batch, 500s then recovery, hung (timeouts), and
  for the log-probability -> confidence mapping. Every server is stopped in its fixture's teardown;
  waits are bounded.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from varco_ocr import batch, model_spec
from varco_ocr.cli import app
from varco_ocr.engine import OCREngine
from varco_ocr.testing.tiny_model import TAUGHT_BLANK_SIZES
from varco_ocr.server import ServerBackend, ServerError, confidences_from_logprobs, looks_tag_stripped, normalise_url
from varco_ocr.testing.fake_server import FakeServer, completion, request_image

pytestmark = pytest.mark.slow

# The two page sizes the taught tiny model memorised its answer for (already at --min-long-side 384).
TAUGHT_SIZES = list(TAUGHT_BLANK_SIZES)
TAUGHT_WORDS_384x96 = [("TOTAL", (38, 19, 173, 29)), ("합계", (192, 20, 307, 32)), ("12,000", (46, 58, 154, 67))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# A real `transformers serve` on loopback
# ------------------------------------------------------------------------------------------------


def mark_tags_special(src: Path, dst: Path) -> Path:
    """The same weights and token ids, with VARCO's task tags special as in the real tokenizer."""
    shutil.copytree(src, dst)
    tok = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    for added in tok["added_tokens"]:
        if added["content"] in model_spec.TASK_TOKENS:
            added["special"], added["normalized"] = True, False
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((dst / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["extra_special_tokens"] = list(cfg.get("extra_special_tokens", [])) + list(model_spec.TASK_TOKENS)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def taught_models(taught, tmp_path_factory):
    """The session's taught tiny model (tests/conftest.py: it answers <ocr> with three real entries for
    the taught blank page sizes; its tags are ordinary tokens), and the same weights with the tags special."""
    root = tmp_path_factory.mktemp("served")
    return {"ordinary": taught.path, "special": mark_tags_special(taught.path, root / "special-tags")}


def transformers_cli() -> list[str]:
    """The `transformers` command of the Python running the tests (its console script's entry point run
    with sys.executable), so the tests do not depend on PATH holding the venv's bin folder."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="transformers") or (None,)
    if script is None:
        return []
    module, _, attr = script.value.partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {attr} as main; sys.exit(main())"]


@pytest.fixture(scope="module")
def transformers_server(taught_models, tmp_path_factory, require):
    """`transformers serve` on 127.0.0.1 (not pinned: the request's model folder is loaded)."""
    command = transformers_cli()
    if not command:
        require("the transformers CLI is not installed (pip install 'transformers[serving]')")
    port = free_port()
    cache = tmp_path_factory.mktemp("hf-cache")  # /v1/models scans the cache; it must exist
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(cache / "serve.log", "wb")
    proc = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {(cache / 'serve.log').read_text(errors='replace')[-2000:]}")
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("transformers serve did not come up within 180 s")
                time.sleep(0.5)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


FAST = ["--min-long-side", "384", "--max-new-tokens", "96"]


def test_server_pages_equal_the_local_engine(transformers_server, taught_models, samples):
    model = str(taught_models["ordinary"])
    images = [Image.new("RGB", size, "white") for size in TAUGHT_SIZES] + [Image.open(samples / "receipt.png")]
    notes: list[str] = []
    backend = ServerBackend([transformers_server], model=model, concurrency=2, timeout=120, min_long_side=384,
                            max_new_tokens=96, keep_raw=True, notify=notes.append)
    try:
        served = backend.ocr_batch(images, indices=[0, 1, 2])
    finally:
        backend.close()
    # the grid the model was taught and saved with, which is what the server uses
    local = OCREngine(model, max_new_tokens=96, min_long_side=384, max_grid=1, keep_raw=True).ocr_batch(images, indices=[0, 1, 2])
    assert [(w.text, w.bbox) for w in served[0].words] == TAUGHT_WORDS_384x96
    for s, l in zip(served, local):
        assert s.error is None
        assert [(w.text, w.bbox) for w in s.words] == [(w.text, w.bbox) for w in l.words]
        assert [ln.text for ln in s.lines] == [ln.text for ln in l.lines]
        assert (s.width, s.height, s.truncated, s.raw) == (l.width, l.height, l.truncated, l.raw)
    # transformers serve refuses skip_special_tokens and ignores logprobs: said once each, confidences null
    assert all(w.confidence is None for w in served[0].words)
    assert all(0.5 < w.confidence <= 1.0 for w in local[0].words)  # the local engine's token probabilities
    assert sum("no log-probabilities" in n for n in notes) == 1
    assert sum("refuses skip_special_tokens" in n for n in notes) == 1


def test_cli_batch_of_documents_through_the_server(transformers_server, taught_models, samples, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, size in enumerate(TAUGHT_SIZES):
        Image.new("RGB", size, "white").save(docs / f"page{i}.png")
    shutil.copy(samples / "three-pages.pdf", docs / "three-pages.pdf")
    out = tmp_path / "out"
    res = run_cli("ocr", docs, "-o", out, "--format", "json,txt", "--server", transformers_server, "--model",
                  taught_models["ordinary"], "--concurrency", "2", "--dpi", "36", *FAST)
    assert res.exit_code == 0, res.output
    page0 = json.loads((out / "page0.json").read_text(encoding="utf-8"))
    assert [(w["text"], tuple(w["bbox"])) for w in page0["pages"][0]["words"]] == TAUGHT_WORDS_384x96
    assert page0["model"] == str(taught_models["ordinary"])
    pdf = json.loads((out / "three-pages.json").read_text(encoding="utf-8"))
    assert [p["index"] for p in pdf["pages"]] == [0, 1, 2]  # page order kept
    assert (out / "page1.txt").read_text(encoding="utf-8").startswith("TOTAL")
    assert "pages, 0 failed attempts" in res.stderr
    # resume: everything is done, nothing is sent again
    again = run_cli("ocr", docs, "-o", out, "--format", "json,txt", "--server", transformers_server, "--model",
                    taught_models["ordinary"], "--dpi", "36", *FAST)
    assert again.exit_code == 0 and ": 0 pages" in again.stderr


def test_cli_single_image_json_through_the_server(transformers_server, taught_models, tmp_path):
    image = tmp_path / "receipt.png"
    Image.new("RGB", (192, 80), "white").save(image)  # upscaled to 384x160: a taught size
    res = run_cli("ocr", image, "--json", "--server", transformers_server, "--model", taught_models["ordinary"], *FAST)
    assert res.exit_code == 0, res.output
    words = json.loads(res.stdout)["pages"][0]["words"]
    assert [w["text"] for w in words] == ["TOTAL", "합계", "12,000"]
    assert words[0]["bbox"] == [19, 16, 86, 24]  # 0.1, 0.2, 0.45, 0.3 of 192 x 80


def test_stripped_tags_are_detected_with_the_fix(transformers_server, taught_models, tmp_path):
    image = tmp_path / "page.png"
    Image.new("RGB", TAUGHT_SIZES[0], "white").save(image)
    res = run_cli("ocr", image, "--json", "--server", transformers_server, "--model", taught_models["special"], *FAST)
    assert res.exit_code == 1
    assert "removed the <char>/<bbox> tags" in res.stderr and "skip_special_tokens: false" in res.stderr
    assert "no OCR tags" in res.stderr and "Traceback" not in res.output


# ------------------------------------------------------------------------------------------------
# A fake OpenAI-compatible server for faults
# ------------------------------------------------------------------------------------------------


def backend(urls, **kwargs) -> ServerBackend:
    defaults = dict(concurrency=4, timeout=5, retries=3, backoff=0.01, rest_seconds=30, min_long_side=0)
    return ServerBackend(urls, **{**defaults, **kwargs})


def page_images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (100 + i, 50), "white") for i in range(n)]


def width_of(page) -> int:
    return int(page.words[0].text[1:])


def test_confidences_come_from_logprobs_as_locally(fake_servers):
    server = fake_servers()
    b = backend([server.url], model="m")
    page = b.ocr_batch([Image.new("RGB", (123, 50), "white")])[0]
    b.close()
    # the word's text tokens are "W" (-0.1) and "123" (-0.7): the minimum probability
    assert [(w.text, w.bbox, w.confidence) for w in page.words] == [("W123", (12, 10, 62, 20), round(math.exp(-0.7), 4))]
    body = server.requests[0]
    assert body["temperature"] == 0 and body["skip_special_tokens"] is False and body["logprobs"] is True
    assert body["messages"][0]["content"][1] == {"type": "text", "text": "<ocr>"}
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert confidences_from_logprobs(["<char>", "a", "</char>", "<char>", "</char>"], [0.0, -1.0, 0.0, 0.0, 0.0]) == [
        pytest.approx(math.exp(-1.0)), None]


def test_model_discovery_order_and_api_key(fake_servers, monkeypatch):
    server = fake_servers()
    monkeypatch.setenv("VARCO_OCR_API_KEY", "sk-secret-123")
    b = backend([server.url.removesuffix("/v1")])  # the /v1 is added
    assert b.model_name == "NCSOFT/VARCO-VISION-2.0-1.7B-OCR"
    pages = b.ocr_batch(page_images(9), indices=list(range(9)))
    b.close()
    assert [width_of(p) for p in pages] == [100 + i for i in range(9)]  # input order, whatever finished first
    assert all(h["Authorization"] == "Bearer sk-secret-123" for h in server.headers)
    assert normalise_url("http://h:8000/v1/") == "http://h:8000/v1"
    with pytest.raises(ValueError):
        normalise_url("gpu1:8000")


def test_refused_fields_are_dropped_once(fake_servers):
    server = fake_servers(reject_fields={"skip_special_tokens"})
    notes: list[str] = []
    b = backend([server.url], model="m", notify=notes.append, concurrency=1)
    pages = b.ocr_batch(page_images(3))
    b.close()
    assert all(p.error is None and p.words for p in pages)
    assert sum("skip_special_tokens" in r for r in server.requests) == 1  # refused once, then never sent
    assert sum("refuses skip_special_tokens" in n for n in notes) == 1


def test_500s_then_recovery(fake_servers):
    server = fake_servers(fail_first=3)
    b = backend([server.url], model="m", concurrency=1)
    pages = b.ocr_batch(page_images(3))
    b.close()
    assert [width_of(p) for p in pages] == [100, 101, 102]
    assert len(server.requests) == 6 and b.stats()[0].failed_attempts == 3


def test_killed_server_pages_go_to_the_other(fake_servers):
    dying, healthy = fake_servers(die_after=2), fake_servers()
    b = backend([dying.url, healthy.url], model="m", concurrency=2)
    pages = b.ocr_batch(page_images(12), indices=list(range(12)))
    b.close()
    assert all(p.error is None for p in pages) and [width_of(p) for p in pages] == [100 + i for i in range(12)]
    counts = {s.url: s.pages for s in b.stats()}
    assert counts[dying.url] <= 2 and counts[healthy.url] >= 10 and sum(counts.values()) == 12


def test_hung_server_times_out_and_its_pages_go_elsewhere(fake_servers):
    hung, healthy = fake_servers(hang=True), fake_servers()
    b = backend([hung.url, healthy.url], model="m", concurrency=2, timeout=0.5)
    started = time.monotonic()
    pages = b.ocr_batch(page_images(10))
    b.close()
    assert all(p.error is None for p in pages)
    assert time.monotonic() - started < 30  # bounded: at most a few timeouts, not a hang
    assert b.stats()[0].failed_attempts >= 1 and b.stats()[1].pages == 10
    # after 3 timeouts in a row the hung server rests: it is not given every other page
    assert len(hung.requests) <= 4


def test_failed_pages_are_recorded_and_resume_completes_them(fake_servers, tmp_path, monkeypatch):
    monkeypatch.setenv("VARCO_OCR_API_KEY", "sk-secret-123")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        Image.new("RGB", (100 + i, 40), "white").save(docs / f"d{i}.png")
    out = tmp_path / "out"
    options = batch.BatchOptions(out_dir=out, formats=("json",), batch_size=4, progress="none")

    hung = fake_servers(hang=True)
    b = backend([hung.url], model="m", timeout=0.3, retries=1)
    first = batch.run([docs], b, options)
    b.close()
    assert [o.status for o in first.outcomes] == ["failed"] * 3 and first.exit_code == 1
    records = [json.loads(l) for l in (out / batch.LOG_NAME).read_text().splitlines()]
    failures = [r for r in records if r.get("status") == "failed"]
    assert len(failures) == 3 and all("OCR failed on the server" in r["page_errors"][0] for r in failures)
    assert "sk-secret-123" not in (out / batch.LOG_NAME).read_text()
    hung.stop()

    healthy = fake_servers()
    b = backend([healthy.url], model="m")
    second = batch.run([docs], b, options)
    b.close()
    assert [o.status for o in second.outcomes] == ["done"] * 3 and second.exit_code == 0
    assert [json.loads((out / f"d{i}.json").read_text())["pages"][0]["words"][0]["text"] for i in range(3)] == [
        "W100", "W101", "W102"]


def test_every_server_dead_is_one_line_per_page_not_a_hang(fake_servers, tmp_path):
    gone = fake_servers()
    url = gone.url
    gone.stop()
    # nothing answers: said as such at the start, model given or not (issue 16 item 5)
    for model in (None, "m"):
        with pytest.raises(ServerError) as caught:
            backend([url], model=model)
        assert str(caught.value) == f"no server answered: {url} (connection refused)"
    # a server that dies after the start: each page fails alone, with one line
    dying = fake_servers()
    b = backend([dying.url], model="m", retries=2)
    dying.stop()
    pages = b.ocr_batch(page_images(2))
    b.close()
    assert all(p.error and "connection refused (gave up after 3 attempts)" in p.error and "\n" not in p.error for p in pages)


def test_discovery_fails_only_when_a_server_answers_without_a_model(fake_servers):
    empty = fake_servers(models=())
    with pytest.raises(ServerError, match=r"^cannot discover the served model \(.*lists no model\); pass --model NAME$"):
        backend([empty.url])
    # a down server beside it does not hide that: discovery looks at every server
    down = fake_servers()
    down.stop()
    with pytest.raises(ServerError, match="cannot discover"):
        backend([down.url, empty.url])
    # the model given is used as given, without asking for the list
    assert backend([empty.url], model="NCSOFT/VARCO-VISION-2.0-1.7B-OCR").model_name == "NCSOFT/VARCO-VISION-2.0-1.7B-OCR"


def test_tag_stripped_answers_are_recognised():
    assert looks_tag_stripped("TOTAL0.1, 0.2, 0.45, 0.3\n합계0.5, 0.21, 0.8, 0.33")
    assert not looks_tag_stripped("<char>TOTAL</char><bbox>0.1, 0.2, 0.45, 0.3</bbox>")
    assert not looks_tag_stripped("The total is 12,000 won.")


# ------------------------------------------------------------------------------------------------
# --split-truncated through a server: a fake server that really reads black boxes in the image
# ------------------------------------------------------------------------------------------------


def dense_page() -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """12 lines of 3 black 'words' (30 px tall, 90 px line pitch); each word's width names it."""
    from PIL import ImageDraw

    image = Image.new("RGB", (400, 1200), "white")
    draw = ImageDraw.Draw(image)
    words = []
    for k in range(36):
        line, col = divmod(k, 3)
        width = 40 + 2 * k
        box = (10 + 130 * col, 30 + 90 * line, 10 + 130 * col + width, 60 + 90 * line)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill="black")
        words.append((f"w{width}", box))
    return image, words


def read_black_boxes(image: Image.Image, limit: int) -> tuple[str, bool]:
    """What the fake server 'reads': dark boxes (rows, then columns), named by their width; at most
    ``limit`` entries, then the answer is cut as a token limit would cut it."""
    import numpy as np

    dark = np.asarray(image.convert("L")) < 128
    w, h = image.size

    def runs(mask):
        out, start = [], None
        for i, v in enumerate(list(mask) + [False]):
            if v and start is None:
                start = i
            elif not v and start is not None:
                out.append((start, i))
                start = None
        return out

    entries = []
    for top, bottom in runs(dark.any(axis=1)):
        for left, right in runs(dark[top:bottom].any(axis=0)):
            entries.append(f"<char>w{right - left}</char><bbox>{left / w:.6f}, {top / h:.6f}, {right / w:.6f}, {bottom / h:.6f}</bbox>")
    cut = len(entries) > limit
    return "\n".join(entries[:limit]) + ("\n<char>w" if cut else ""), cut


class ReadingServer(FakeServer):
    def __init__(self, limit: int):
        self.limit = limit
        self.sizes: list[tuple[int, int]] = []
        super().__init__(respond=self.read)

    def read(self, handler, body) -> bool:
        image = request_image(body)
        with self.lock:
            self.sizes.append(image.size)
        text, cut = read_black_boxes(image, self.limit)
        handler.reply(200, completion(text, finish_reason="length" if cut else "stop"))
        return True


def test_split_truncated_reads_a_dense_page_completely_through_a_server():
    from varco_ocr.bands import band_count, plan_bands

    image, truth = dense_page()
    server = ReadingServer(limit=12)
    try:
        plain = backend([server.url], model="m").ocr_batch([image])[0]
        assert plain.truncated and len(plain.words) == 12
        b = backend([server.url], model="m", split_truncated=True)
        page = b.ocr_batch([image])[0]
        b.close()
    finally:
        server.stop()
    assert not page.truncated and page.error is None
    assert sorted((w.text, w.bbox) for w in page.words) == sorted(truth)
    # the page, then its bands: 12 words (4 lines) read down to y=330 of 1200 -> ceil(1.25 * 1200 / 330) = 5
    # bands, overlapping by max(64, 6% of 1200) = 72 px
    bands = plan_bands(1200, band_count(1200, 330), 72)
    assert len(bands) == 5 and len(server.sizes) == 1 + 1 + 5
    assert sorted(server.sizes[-5:]) == sorted((400, b.height) for b in bands)


def test_ask_through_the_server_streams_the_same_text(transformers_server, taught_models, tmp_path):
    paths = []
    for i, size in enumerate(TAUGHT_SIZES):
        paths.append(tmp_path / f"p{i}.png")
        Image.new("RGB", size, "white").save(paths[-1])
    args = ["ask", *paths, "Which page is taller?", "--server", transformers_server, "--model", taught_models["ordinary"],
            "--max-new-tokens", "12", "--min-long-side", "384"]
    plain, streamed, as_json = run_cli(*args), run_cli(*args, "--stream"), run_cli(*args, "--json")
    assert plain.exit_code == streamed.exit_code == as_json.exit_code == 0, plain.output + streamed.output
    # An answer cut by the token limit inside a multi-byte character: transformers serve's plain answer
    # ends in U+FFFD for the partial bytes, its stream withholds the last token's text. Otherwise equal.
    plain_text, streamed_text = plain.stdout.rstrip("\n"), streamed.stdout.rstrip("\n")
    assert plain_text.strip() and plain_text.startswith(streamed_text)
    assert plain_text == streamed_text or (plain_text.endswith("\ufffd") and len(plain_text) - len(streamed_text) <= 3)
    record = json.loads(as_json.stdout)
    assert record["answer"] + "\n" == plain.stdout
    assert [s["page"] for s in record["sources"]] == [1, 1] and record["model"] == str(taught_models["ordinary"])
    assert record["tokens"]["prompt"] > 2 * 577 and 1 <= record["tokens"]["answer"] <= 12
    assert record["tokens"]["visual"] is None  # the server reports only totals


@pytest.mark.parametrize("kind", ["grey", "colour", "grey but one pixel"])
def test_the_server_sees_exactly_the_pages_pixels_grey_pages_as_one_channel(kind):
    """A grey page is sent as a single-channel PNG; transformers' own image loading (what
    `transformers serve` runs; vLLM also converts to RGB with Pillow) gives back exactly the RGB
    pixels the local engine reads, for grey and colour pages alike."""
    import base64
    import io

    from PIL import ImageDraw
    from transformers.image_utils import load_image as hf_load_image

    from varco_ocr.server import image_data_url

    page = Image.new("RGB", (320, 200), (247, 247, 247))
    ImageDraw.Draw(page).text((10, 80), "TOTAL 12,000", fill=(12, 12, 12))
    if kind == "colour":
        ImageDraw.Draw(page).rectangle((200, 20, 300, 60), fill=(200, 30, 40))
    elif kind == "grey but one pixel":
        page.putpixel((5, 199), (90, 91, 90))
    url = image_data_url(page)
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.mode == ("L" if kind == "grey" else "RGB")
    seen = hf_load_image(url)
    assert seen.mode == "RGB" and seen.size == page.size and seen.tobytes() == page.tobytes()


def test_grey_detection_round_trips_any_page():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from transformers.image_utils import load_image as hf_load_image

    from varco_ocr.server import image_data_url

    pixel = st.one_of(st.integers(0, 255).map(lambda v: (v, v, v)), st.tuples(*[st.integers(0, 255)] * 3))

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 12), st.integers(1, 70), st.data())
    def round_trip(w, h, data):
        pixels = data.draw(st.lists(pixel, min_size=w * h, max_size=w * h))
        page = Image.new("RGB", (w, h))
        page.putdata(pixels)
        assert hf_load_image(image_data_url(page)).tobytes() == page.tobytes()

    round_trip()


def test_a_page_file_the_model_reads_as_it_is_is_sent_as_its_own_bytes(fake_servers, tmp_path):
    """An RGB PNG or JPEG that needs no change (no EXIF rotation, no upscale) is sent as the file's
    own bytes, which transformers' image loading decodes to the pixels the local engine reads; a
    rotated JPEG and a small PNG (upscaled) are sent as the prepared pixels."""
    import base64

    from PIL import ImageDraw
    from transformers.image_utils import load_image as hf_load_image

    from varco_ocr.preprocessing import load_image, prepare_for_model

    fake = fake_servers()
    page = Image.new("RGB", (2400, 1700), "white")
    ImageDraw.Draw(page).text((100, 100), "SUBTOTAL 9,900", fill=(20, 20, 90))
    rotated = Image.Exif()
    rotated[0x0112] = 6
    files = {"png": tmp_path / "page.png", "jpeg": tmp_path / "page.jpg", "rotated": tmp_path / "rotated.jpg",
             "small": tmp_path / "small.png"}
    page.save(files["png"])
    page.save(files["jpeg"], quality=90)
    page.save(files["rotated"], quality=90, exif=rotated.tobytes())
    page.resize((600, 425)).save(files["small"])
    backend = ServerBackend([fake.url], model="m", retries=0)
    try:
        for name, path in files.items():
            before = len(fake.requests)
            (result,) = backend.ocr_batch([load_image(path)], indices=[0])
            assert result.error is None, result.error
            url = fake.requests[before]["messages"][0]["content"][0]["image_url"]["url"]
            sent = base64.b64decode(url.split(",", 1)[1])
            expected = prepare_for_model(load_image(path))
            assert hf_load_image(url).tobytes() == expected.tobytes(), name
            assert (sent == path.read_bytes()) == (name in ("png", "jpeg")), name
    finally:
        backend.close()


def test_a_page_file_mostly_made_of_metadata_is_sent_as_pixels(tmp_path):
    """A small RGB PNG padded with 3 MB of text chunks would be read whole and sent as its own bytes;
    the file is sent as it is only while it is no larger than its raw pixels (plus a little)."""
    from PIL import PngImagePlugin

    from varco_ocr.preprocessing import load_image
    from varco_ocr.server import page_data_url, stored_data_url

    info = PngImagePlugin.PngInfo()
    info.add_text("padding", "x" * 3_000_000)
    Image.new("RGB", (400, 300), "white").save(tmp_path / "padded.png", pnginfo=info)
    Image.new("RGB", (400, 300), "white").save(tmp_path / "plain.png")
    # the plain file is sent as it is: its own bytes, not merely some data URL
    plain = (tmp_path / "plain.png").read_bytes()
    assert stored_data_url(load_image(tmp_path / "plain.png")) == "data:image/png;base64," + base64.b64encode(plain).decode("ascii")
    padded = load_image(tmp_path / "padded.png")
    assert stored_data_url(padded) is None
    assert len(page_data_url(padded)) < 100_000  # the pixels, encoded: not the 3 MB file


def test_a_page_edited_in_memory_or_changed_on_disk_is_sent_as_the_pixels_read(tmp_path):
    """The file's own bytes stand for the page only while they are the pixels that were read: an
    image the caller opened and edited in place (a redaction drawn on it) still carries its file's
    name and format, and a file replaced on disk since it was decoded holds other pixels; both were
    sent as the file."""
    import io
    import os

    from PIL import ImageDraw

    from varco_ocr.preprocessing import load_image, prepare_for_model
    from varco_ocr.server import page_data_url, stored_data_url

    def sent_pixel(url: str) -> tuple:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB").getpixel((10, 10))

    path = tmp_path / "page.png"
    Image.new("RGB", (3000, 2000), "white").save(path)

    edited = Image.open(path)
    edited.load()
    ImageDraw.Draw(edited).rectangle((0, 0, 100, 100), fill="black")  # e.g. a redaction
    page = prepare_for_model(load_image(edited))
    assert stored_data_url(page) is None
    assert sent_pixel(page_data_url(page)) == (0, 0, 0)

    read = prepare_for_model(load_image(path))
    assert stored_data_url(read) is not None  # unchanged: the file's bytes
    stat = path.stat()
    Image.new("RGB", (3000, 2000), "black").save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert stored_data_url(read) is None
    assert sent_pixel(page_data_url(read)) == (255, 255, 255)  # what was read, not the file as it is now
