"""The server client under a hostile or broken server (issue 12 items 10-13, issue 18's server mutants,
issue 16 item 5), against the loopback fake server (varco_ocr.testing.fake_server): trickled bytes,
endless bodies, secrets echoed at a cut, malformed answers, 429s and Retry-After.

The single-page and batch runs drive the real CLI in a subprocess (``python -m varco_ocr``), as a
user would; the rest uses ServerBackend directly. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from varco_ocr import batch, model_spec
from varco_ocr.cli import app
from varco_ocr.server import (
    DEFAULT_RETRIES,
    ServerBackend,
    redact,
    retry_after_seconds,
    retry_delay,
)
from varco_ocr.testing.fake_server import FakeServer, answer_for, completion, request_image, width_answer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-LEAKTEST-0123456789abcdefXYZ"


def backend(urls, **kwargs) -> ServerBackend:
    defaults = dict(model="m", concurrency=4, timeout=5, retries=3, backoff=0.01, rest_seconds=30, min_long_side=0)
    return ServerBackend(urls, **{**defaults, **kwargs})


def one_page(b: ServerBackend, width: int = 100):
    try:
        return b.ocr_batch([Image.new("RGB", (width, 50), "white")])[0]
    finally:
        b.close()


def cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """The real command in a subprocess, with this checkout's code."""
    given = env or {}
    env = {k: v for k, v in os.environ.items() if k not in ("VARCO_OCR_API_KEY", "OPENAI_API_KEY")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **given})
    return subprocess.run([sys.executable, "-m", "varco_ocr", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def log_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / batch.LOG_NAME).read_text(encoding="utf-8").splitlines()]


def save_pages(folder: Path, widths) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for w in widths:
        paths.append(folder / f"d{w}.png")
        Image.new("RGB", (w, 40), "white").save(paths[-1])
    return paths


SERVER_CLI = ["--model", "m", "--min-long-side", "0", "--max-new-tokens", "96"]


# ------------------------------------------------------------------------------------------------
# 10. Deadline: --timeout bounds the whole request; Retry-After up to --timeout
# ------------------------------------------------------------------------------------------------


def raw_ok_response() -> bytes:
    text, logprobs = answer_for(100)
    body = json.dumps(completion(text, logprobs)).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("phase", ["status-and-headers", "body"])
def test_a_trickling_server_is_cut_at_the_timeout(fake_servers, phase):
    # One byte every 0.25 s: every socket read succeeds well within the 1 s timeout, so only a
    # deadline on the whole request ends it (the full answer would take ~90 s).
    raw = raw_ok_response()

    def trickle(handler, body):
        if phase == "body":
            head, rest = raw.split(b"\r\n\r\n", 1)
            handler.wfile.write(head + b"\r\n\r\n")
            handler.wfile.flush()
            handler.trickle(rest, 0.25)
        else:
            handler.trickle(raw, 0.25)
        return True

    server = fake_servers(respond=trickle)
    started = time.monotonic()
    page = one_page(backend([server.url], timeout=1.0, retries=1))
    elapsed = time.monotonic() - started
    assert page.error and "no complete answer within 1 s (gave up after 2 attempts)" in page.error
    assert len(server.requests) == 2
    assert 2.0 <= elapsed < 3.5  # two attempts of 1 s each, plus a tiny backoff


def test_retry_after_parsing_never_crashes_and_reads_dates():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert retry_after_seconds("0.5") == 0.5 and retry_after_seconds(" 120 ") == 120.0 and retry_after_seconds("0") == 0.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert retry_after_seconds(format_datetime(now - timedelta(days=1), usegmt=True), now=now) == 0.0  # past: now
    for garbage in (None, "", "-1", "nan", "NaN", "inf", "-inf", "1e999", "soon", "Mon, 99 Foo 2026", "\x00"):
        assert retry_after_seconds(garbage, now=now) is None, garbage
    assert retry_after_seconds("1e300") == 1e300  # huge but finite: the timeout caps it


def test_retry_delay_boundaries():
    kw = dict(backoff=0.5, max_backoff=30.0, timeout=7.0)
    # Retry-After exactly as given, up to the timeout, and never jittered
    assert retry_delay(0, 0.37, **kw, rand=lambda: 0.99) == 0.37
    assert retry_delay(3, 7.0, **kw) == 7.0 and retry_delay(0, 7.000001, **kw) == 7.0 and retry_delay(0, 1e300, **kw) == 7.0
    assert retry_delay(0, 0.0, **kw) == 0.0
    # without it: exponential (0.5, 1, 2, 4 ...) times a jitter in [0.5, 1.5)
    assert [retry_delay(a, None, **kw, rand=lambda: 0.5) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [retry_delay(a, None, **kw, rand=lambda: 0.0) for a in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert retry_delay(2, None, **kw, rand=lambda: 0.999) == pytest.approx(2.0 * 1.499)
    assert retry_delay(10, None, **kw, rand=lambda: 0.5) == 30.0  # capped at max_backoff
    # the real jitter differs from one call to the next
    assert len({retry_delay(1, None, **kw) for _ in range(20)}) > 1


def failing_then_ok(status: int, times: int, headers: dict | None = None):
    state = {"n": 0}

    def respond(handler, body):
        state["n"] += 1
        if state["n"] <= times:
            handler.reply(status, {"error": "busy"}, headers=headers)
            return True
        return False

    return respond


def gaps(server: FakeServer) -> list[float]:
    t = server.request_times
    return [b - a for a, b in zip(t, t[1:])]


def test_429_is_retried(fake_servers):
    server = fake_servers(respond=failing_then_ok(429, 2))
    page = one_page(backend([server.url]))
    assert page.error is None and page.words[0].text == "W100"
    assert len(server.requests) == 3


@pytest.mark.parametrize(("retry_after", "timeout", "expected"), [("0.6", 5.0, 0.6), ("3600", 0.8, 0.8), ("date", 0.8, 0.8)])
def test_retry_after_is_honoured_exactly_and_capped_by_the_timeout(fake_servers, retry_after, timeout, expected):
    if retry_after == "date":
        retry_after = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    server = fake_servers(respond=failing_then_ok(429, 1, headers={"Retry-After": retry_after}))
    page = one_page(backend([server.url], timeout=timeout, backoff=5.0))  # the backoff alone would wait >= 2.5 s
    assert page.error is None
    [gap] = gaps(server)
    assert expected <= gap < expected + 0.3


@pytest.mark.parametrize("garbage", ["-5", "nan", "1e999", "whenever"])
def test_unusable_retry_after_falls_back_to_the_backoff(fake_servers, garbage):
    server = fake_servers(respond=failing_then_ok(503, 1, headers={"Retry-After": garbage}))
    page = one_page(backend([server.url], backoff=0.01))
    assert page.error is None and gaps(server)[0] < 0.5


def test_the_default_retry_count_and_the_jittered_exponential_backoff(fake_servers, monkeypatch):
    import varco_ocr.server as server_module

    server = fake_servers(fail_first=100)
    # the jitter's random draw pinned near its top: each wait is 1.499 x 0.05 x 2**attempt, which a
    # constant backoff (0.05 each time) or one without jitter (0.05 x 2**attempt) falls short of
    monkeypatch.setattr(server_module.random, "random", lambda: 0.999)
    b = ServerBackend([server.url], model="m", backoff=0.05, min_long_side=0)  # retries: the default
    page = one_page(b)
    assert DEFAULT_RETRIES == 4
    assert len(server.requests) == 5 and "gave up after 5 attempts" in page.error
    waits = gaps(server)
    assert all(w >= 0.05 * 2 ** i * 1.499 for i, w in enumerate(waits)), waits


# ------------------------------------------------------------------------------------------------
# 11. Bounded memory: answers over the cap are refused without reading them
# ------------------------------------------------------------------------------------------------


HUGE = 400 * 1024 * 1024
HEAD = b'{"choices": [{"message": {"content": "'


def huge_answer(declared: bool):
    def respond(handler, body):
        handler.stream_chunked(HEAD, b"a" * 65536, HUGE, content_length=HUGE if declared else None)
        return True

    return respond


def test_a_huge_declared_length_is_refused_unread(fake_servers):
    def declare(handler, body):  # claims 10 GB, sends a few bytes, then waits (bounded)
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 ** 10))
        handler.end_headers()
        handler.wfile.write(HEAD)
        handler.wfile.flush()
        handler.fake.release.wait(10)
        handler.close_connection = True
        return True

    server = fake_servers(respond=declare)
    started = time.monotonic()
    page = one_page(backend([server.url], max_new_tokens=96))
    assert time.monotonic() - started < 2  # not a read until the timeout
    assert "the answer is 10000000000 bytes, over the 1048576-byte limit for this request: refused unread" in page.error
    assert len(server.requests) == 1  # not asked again: the same request would get the same answer


def test_an_endless_chunked_body_is_cut_at_the_cap(fake_servers):
    server = fake_servers(respond=huge_answer(declared=False))
    b = backend([server.url], max_new_tokens=2048)  # cap: 2048 * 4 KiB = 8 MiB
    assert b.max_body_bytes == 8 * 1024 * 1024
    page = one_page(b)
    assert "over the 8388608-byte limit for this request" in page.error
    assert len(server.requests) == 1
    time.sleep(0.2)  # let the handler see the closed connection
    assert server.sent_bytes < 8 * 1024 * 1024 + 16 * 1024 * 1024  # the cap plus socket buffers, not 400 MB


MAXRSS = """
import resource, runpy, sys
sys.argv = ["varco-ocr", *sys.argv[1:]]
try:
    runpy.run_module("varco_ocr", run_name="__main__")
finally:
    print("MAXRSS-KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def cli_maxrss(*args) -> tuple[subprocess.CompletedProcess, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", MAXRSS, *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=180, cwd=ROOT)
    return res, int(res.stderr.rsplit("MAXRSS-KB", 1)[1].split()[0])


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_a_huge_body_keeps_the_client_memory_bounded(fake_servers, tmp_path, declared):
    [image] = save_pages(tmp_path / "in", [100])
    healthy = fake_servers()
    ok, baseline_kb = cli_maxrss(image, "-o", tmp_path / "ok", "--server", healthy.url, *SERVER_CLI)
    assert ok.returncode == 0, ok.stderr
    huge = fake_servers(respond=huge_answer(declared))
    res, huge_kb = cli_maxrss(image, "-o", tmp_path / "huge", "--server", huge.url, *SERVER_CLI)
    # a 400 MB answer costs the client at most a few MB more than a healthy one (cap: 1 MiB)
    assert huge_kb - baseline_kb < 48 * 1024, (baseline_kb, huge_kb)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "limit for this request" in json.dumps(log_records(tmp_path / "huge"))


# ------------------------------------------------------------------------------------------------
# 12. Secrets: the API key, whole or any prefix of 4+ characters, appears nowhere
# ------------------------------------------------------------------------------------------------


def test_redact_removes_the_key_and_every_prefix_a_cut_leaves():
    for n in range(4, len(KEY) + 1):
        text = "x" * 10 + KEY[:n] + " tail " + KEY
        assert KEY[:4] not in redact(text, KEY)
        assert KEY[:4] not in redact(text, KEY)[: 10 + n // 2]
    assert redact("Bearer " + KEY + ".", KEY) == "Bearer ***."
    assert redact("sk-L", KEY) == "***" and redact("sk-", KEY) == "sk-"  # 3 characters say nothing
    assert redact("no key here", None) == "no key here"


def echo_header_at(cut: int, status: int, offset: int = 0):
    """A reply whose body echoes the Authorization header so the key starts 5 characters before
    ``cut`` (in the message, which puts ``offset`` characters before the body)."""

    def body_for(handler) -> str:
        echo = f"your headers: Authorization: {handler.headers['Authorization']} (rejected)"
        start = echo.index("Bearer ") + len("Bearer ")
        return "." * (cut - 5 - offset - start) + echo

    return body_for


def all_output(res: subprocess.CompletedProcess, *folders: Path) -> str:
    texts = [res.stdout, res.stderr]
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


@pytest.mark.parametrize("where", ["5xx-cut-at-200", "4xx-cut-at-500", "discovery-cut-at-400"])
def test_the_api_key_never_leaks_at_a_cut(fake_servers, tmp_path, where):
    if where == "5xx-cut-at-200":
        body_for = echo_header_at(200, 500)

        def respond(handler, body):  # Retry-After 0: the 5 attempts take no time
            handler.reply_bytes(500, body_for(handler).encode(), {"Retry-After": "0"})
            return True

        server = fake_servers(respond=respond)
        model = ["--model", "m"]
    elif where == "4xx-cut-at-500":
        body_for = echo_header_at(500, 400)

        def respond(handler, body):
            handler.reply_bytes(400, body_for(handler).encode())
            return True

        server = fake_servers(respond=respond)
        model = ["--model", "m"]
    else:
        def respond_get(handler):
            prefix = len(f"{handler.fake.url}: HTTP 401: ")  # the problem's text before the body
            handler.reply_bytes(401, echo_header_at(400, 401, offset=prefix)(handler).encode())
            return True

        server = fake_servers(respond_get=respond_get)
        model = []
    [image] = save_pages(tmp_path / "in", [100])
    out = tmp_path / "out"
    res = cli(image, "-o", out, "--server", server.url, "--min-long-side", "0", "--max-new-tokens", "96", *model,
              env={"VARCO_OCR_API_KEY": KEY})
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in server.headers + server.gets)  # it was sent
    everything = all_output(res, out)
    assert KEY[:4] not in everything  # no prefix of 4 or more characters, anywhere
    assert "***" in everything  # the echo was reported, redacted


# ------------------------------------------------------------------------------------------------
# 13. Malformed answers: the page fails alone, is recorded, and resume completes it
# ------------------------------------------------------------------------------------------------


def good_logprobs():
    return answer_for(100)[1]


MALFORMED = {
    "content-list": (completion([{"type": "text", "text": "<char>a</char>"}]), "message.content is a list, not text"),
    "content-number": (completion(12), "message.content is a int, not text"),
    "logprobs-strings": (completion(answer_for(100)[0], ["-0.1", "-0.2"]), "logprobs.content[0] is a str, not an object"),
    "logprob-not-numeric": (completion(answer_for(100)[0], [{**e, "logprob": "low"} for e in good_logprobs()]),
                            "logprobs.content[0].logprob is 'low', not a log-probability"),
    "logprob-null": (completion(answer_for(100)[0], [{**e, "logprob": None} for e in good_logprobs()]),
                     "logprob is None, not a log-probability"),
    "logprob-positive": (completion(answer_for(100)[0], [{**e, "logprob": 0.5} for e in good_logprobs()]),
                         "logprob is 0.5, not a log-probability"),
    "logprob-bool": (completion(answer_for(100)[0], [{**e, "logprob": True} for e in good_logprobs()]),
                     "logprob is True"),
    "token-number": (completion(answer_for(100)[0], [{**e, "token": 7} for e in good_logprobs()]),
                     "logprobs.content[0].token is a int, not text"),
    "lone-surrogate": (completion("<char>a\ud800b</char><bbox>0.1, 0.2, 0.5, 0.4</bbox>"),
                       "message.content is not valid Unicode (lone surrogate U+D800 at character 7)"),
    "no-choices": ({"id": "x"}, "'choices' is null, not a list of choices"),
    "empty-choices": ({"choices": []}, "'choices' is empty"),
    "choices-string": ({"choices": "abc"}, "'choices' is str"),
    "message-null": ({"choices": [{"message": None}]}, "choices[0].message is a null, not an object"),
    "finish-number": (completion("<char>a</char>", finish_reason=3), "finish_reason is a int"),
    "logprobs-list": ({"choices": [{"message": {"content": "x"}, "logprobs": [1]}]}, "choices[0].logprobs is a list"),
    "top-level-list": ([1, 2], "the answer is a JSON list, not an object"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_answer_is_a_page_failure_asked_once(fake_servers, case):
    payload, message = MALFORMED[case]
    server = fake_servers(answer=lambda body: payload)
    page = one_page(backend([server.url]))
    assert page.error and message in page.error, page.error
    assert "\n" not in page.error and list(page.words) == []
    assert len(server.requests) == 1  # greedy decoding would answer the same: not asked again


def test_an_answer_that_is_not_json_is_a_page_failure(fake_servers):
    def respond(handler, body):
        handler.reply_bytes(200, b"<html>proxy says hi</html>")
        return True

    page = one_page(backend([fake_servers(respond=respond).url]))
    assert "the server's answer is unusable: the answer is not JSON" in page.error


BY_WIDTH = {100: "content-list", 101: "logprobs-strings", 102: "logprob-not-numeric", 103: "lone-surrogate", 104: "no-choices"}


def malformed_by_width(body):
    width = request_image(body).size[0]
    return MALFORMED[BY_WIDTH[width]][0] if width in BY_WIDTH else width_answer(body)


def test_malformed_answers_in_a_cli_batch_fail_alone_and_resume_completes_them(fake_servers, tmp_path):
    widths = [100, 101, 102, 103, 104, 105]
    save_pages(tmp_path / "docs", widths)
    out = tmp_path / "out"
    hostile = fake_servers(answer=malformed_by_width)
    res = cli(tmp_path / "docs", "-o", out, "-f", "json", "--server", hostile.url, "--concurrency", "3", *SERVER_CLI)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    # one request per page: the healthy one is not asked again because of the others
    assert sorted(request_image(b).size[0] for b in hostile.requests) == widths
    records = log_records(out)
    docs = {Path(r["source"]).stem: r for r in records if "source" in r}
    assert docs["d105"]["status"] == "done"
    for width, case in BY_WIDTH.items():
        record = docs[f"d{width}"]
        assert record["status"] == "failed"
        assert MALFORMED[case][1] in " ".join(record["page_errors"]), record
    end = [r for r in records if r.get("event") == "run-end"]
    assert len(end) == 1 and end[0]["done"] == 1 and end[0]["failed"] == 5
    assert json.loads((out / "d105.json").read_text())["pages"][0]["words"][0]["text"] == "W105"

    healthy = fake_servers()
    again = cli(tmp_path / "docs", "-o", out, "-f", "json", "--server", healthy.url, *SERVER_CLI)
    assert again.returncode == 0, again.stderr
    assert sorted(request_image(b).size[0] for b in healthy.requests) == widths[:5]  # only the failed ones
    for w in widths:
        assert json.loads((out / f"d{w}.json").read_text())["pages"][0]["words"][0]["text"] == f"W{w}"


def test_a_malformed_answer_in_a_single_page_cli_run(fake_servers, tmp_path):
    [image] = save_pages(tmp_path / "in", [100])
    server = fake_servers(answer=malformed_by_width)
    out = tmp_path / "out"
    res = cli(image, "-o", out, "--server", server.url, *SERVER_CLI)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    records = log_records(out)
    [failure] = [r for r in records if r.get("status") == "failed"]
    assert "message.content is a list, not text" in failure["page_errors"][0]
    assert records[-1]["event"] == "run-end" and records[-1]["failed"] == 1
    # to stdout: one line on stderr, exit 1
    res = cli(image, "--json", "--server", server.url, *SERVER_CLI)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "message.content is a list, not text" in lines[0]


class RaisingBackend:
    """A backend whose every call fails as a broken backend might (not a Page with an error)."""

    model_name = "m"

    def ocr_batch(self, images, batch_size=1, indices=None, dpis=None):
        raise ValueError("decoder exploded")


def test_a_one_page_batch_that_raises_is_a_recorded_failure(tmp_path):
    save_pages(tmp_path / "docs", [100])
    out = tmp_path / "out"
    summary = batch.run([tmp_path / "docs"], RaisingBackend(), batch.BatchOptions(out_dir=out, formats=("json",), progress="none"))
    assert [o.status for o in summary.outcomes] == ["failed"] and summary.exit_code == 1
    records = log_records(out)
    assert "OCR failed (ValueError: decoder exploded)" in records[-2]["page_errors"][0]
    assert records[-1]["event"] == "run-end"


# ------------------------------------------------------------------------------------------------
# Issue 16 item 5: "no server answered" vs "cannot discover"; an explicit default --model is given
# ------------------------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_every_server_down_is_one_line_naming_it(fake_servers, tmp_path):
    [image] = save_pages(tmp_path / "in", [100])
    a, b = fake_servers(), fake_servers()
    a.stop()
    b.stop()
    for extra in ([], ["--model", model_spec.DEFAULT_MODEL]):
        res = run_cli("ocr", image, "--server", a.url, "--server", b.url, *extra)
        assert res.exit_code == 2
        assert res.stderr == f"varco-ocr: no server answered: {a.url} (connection refused); {b.url} (connection refused)\n"


def test_the_default_model_name_given_explicitly_is_used(fake_servers, tmp_path):
    [image] = save_pages(tmp_path / "in", [100])
    server = fake_servers(models=("some/other-model",))
    explicit = run_cli("ocr", image, "--json", "--server", server.url, "--model", model_spec.DEFAULT_MODEL, "--min-long-side", "0")
    assert explicit.exit_code == 0, explicit.output
    assert json.loads(explicit.stdout)["model"] == model_spec.DEFAULT_MODEL
    assert server.requests[-1]["model"] == model_spec.DEFAULT_MODEL
    discovered = run_cli("ocr", image, "--json", "--server", server.url, "--min-long-side", "0")
    assert discovered.exit_code == 0, discovered.output
    assert json.loads(discovered.stdout)["model"] == "some/other-model" == server.requests[-1]["model"]


def test_a_server_without_the_model_is_the_discovery_error(fake_servers, tmp_path):
    [image] = save_pages(tmp_path / "in", [100])
    server = fake_servers(models=())
    res = run_cli("ocr", image, "--server", server.url)
    assert res.exit_code == 2
    assert res.stderr == (f"varco-ocr: cannot discover the served model ({server.url}: /models lists no model); "
                          f"pass --model NAME (e.g. --model {model_spec.DEFAULT_MODEL})\n")


# ------------------------------------------------------------------------------------------------
# `ask` through a server: the same checks on its answers and streams
# ------------------------------------------------------------------------------------------------


def sse(handler, events: list[str]) -> None:
    data = "".join(f"data: {e}\n\n" for e in events).encode()
    handler.reply_bytes(200, data, {"Content-Type": "text/event-stream"})


@pytest.mark.parametrize(("answer", "stream", "code", "out", "err"), [
    (completion("It says TOTAL.", finish_reason="stop") | {"usage": {"prompt_tokens": 9, "completion_tokens": 4}},
     False, 0, "It says TOTAL.\n", ""),
    (completion(["It says TOTAL."]), False, 2, "", "choices[0].message.content is a list, not text"),
    (completion("ok") | {"usage": {"prompt_tokens": "many"}}, False, 2, "", "usage.prompt_tokens is 'many', not a token count"),
    (['{"choices": [{"delta": {"content": "It says "}}]}', '{"choices": [{"delta": {"content": "TOTAL."}}]}', "[DONE]"],
     True, 0, "It says TOTAL.\n", ""),
    (['{"choices": [{"delta": {"content": "It says "}}]}', '{"choices": [{"delta": {"content": 5}}]}'],
     True, 2, "It says ", "the server's stream broke off (a streamed delta's content is a int, not text)"),
    (['{"choices": [{"delta": {"content": ["x"]}}]}'], True, 2, "", "a streamed delta's content is a list, not text"),
])
def test_ask_through_a_server_checks_its_answers(fake_servers, tmp_path, answer, stream, code, out, err):
    [image] = save_pages(tmp_path / "in", [100])

    def respond(handler, body):
        if body.get("stream"):
            sse(handler, answer)
        else:
            handler.reply(200, answer)
        return True

    server = fake_servers(respond=respond)
    res = run_cli("ask", image, "What does it say?", "--server", server.url, "--model", "m", *(["--stream"] if stream else []))
    assert res.exit_code == code and res.stdout == out, res.output
    lines = res.stderr.splitlines()
    assert (lines == []) if not err else (len(lines) == 1 and err in lines[0]), res.stderr
    assert len(server.requests) == 1
