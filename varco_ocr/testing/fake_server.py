"""A loopback OpenAI-compatible server for tests: http.server in a daemon thread on 127.0.0.1.

It shows on demand what a real server cannot be made to show: 500s then recovery, a hang, a death
mid-batch, refused request fields, and (through ``respond``) any hostile answer: trickled bytes,
endless bodies, echoed secrets, malformed JSON. Every request's body and headers are recorded.
Loops are bounded and ``stop()`` releases every waiting handler, so a test never hangs on it.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image

SERVED_MODEL = "NCSOFT/VARCO-VISION-2.0-1.7B-OCR"


def request_image(body: dict[str, Any]) -> Image.Image:
    """The page image of an OCR request (its base64 PNG data URL)."""
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def answer_for(width: int) -> tuple[str, list[dict]]:
    """An answer naming the page width (one word ``W<width>``), with per-token log-probabilities as
    vLLM returns them."""
    tokens = [("<char>", -0.01), ("W", -0.1), (str(width), -0.7), ("</char>", -0.01), ("<bbox>", -0.01),
              ("0.1, 0.2, 0.5, 0.4", -0.05), ("</bbox>", -0.01)]
    return "".join(t for t, _ in tokens), [{"token": t, "logprob": lp} for t, lp in tokens]


def completion(text: Any, logprobs: Any = None, finish_reason: Any = "stop") -> dict[str, Any]:
    """A chat-completions answer with one choice (any field may be given a wrong type on purpose)."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice]}


def width_answer(body: dict[str, Any]) -> dict[str, Any]:
    text, logprobs = answer_for(request_image(body).size[0])
    return completion(text, logprobs)


class Handler(BaseHTTPRequestHandler):
    """The request handler; ``self.fake`` is the FakeServer. Helpers for scripted replies."""

    fake: "FakeServer"
    protocol_version = "HTTP/1.1"  # chunked replies need it

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.reply_bytes(status, json.dumps(payload).encode(), headers)

    def reply_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def trickle(self, data: bytes, every: float) -> None:
        """Write ``data`` (a whole raw HTTP response, status line included) a byte at a time, one
        every ``every`` seconds, until the client leaves or the server stops."""
        for i in range(len(data)):
            if self.fake.release.wait(every):
                return
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:
                return
        self.close_connection = True

    def stream_chunked(self, head: bytes, filler: bytes, total: int, content_length: int | None = None) -> int:
        """A 200 whose body is ``head`` then ``filler`` repeated up to ``total`` bytes (chunked, or
        with ``content_length`` declared); stops when the client leaves. Returns the bytes sent."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if content_length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(content_length))
        self.end_headers()
        sent = 0
        self.close_connection = True
        try:
            piece = head
            while sent < total and not self.fake.release.is_set():
                piece = piece[: total - sent]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if content_length is None else piece)
                sent += len(piece)
                piece = filler
            if content_length is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        with self.fake.lock:
            self.fake.sent_bytes += sent
        return sent

    def do_GET(self) -> None:
        with self.fake.lock:
            self.fake.gets.append(dict(self.headers))
        if self.fake.respond_get is not None and self.fake.respond_get(self):
            return
        self.reply(200, {"object": "list", "data": [{"id": m} for m in self.fake.models]})

    def do_POST(self) -> None:
        fake = self.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append(body)
            fake.headers.append(dict(self.headers))
            fake.request_times.append(time.monotonic())
            n = len(fake.requests)
        refused = fake.reject_fields & set(body)
        if refused:
            return self.reply(422, {"detail": f"Unexpected fields in the request: {refused}"})
        if n <= fake.fail_first:
            return self.reply(500, {"error": "warming up"})
        if fake.hang:
            fake.release.wait(5)  # bounded: stop() releases it at once
            self.close_connection = True
            return
        if fake.respond is not None and fake.respond(self, body):
            return
        self.reply(200, fake.answer(body))
        with fake.lock:
            fake.answered += 1
            dying = fake.die_after is not None and fake.answered >= fake.die_after
        if dying:
            threading.Thread(target=fake.stop, daemon=True).start()


class FakeServer:
    """Behaviours: ``fail_first`` 500s, then answers; ``hang`` never answers in time; ``die_after``
    answers then stops listening; ``reject_fields`` 422s requests carrying them. ``answer(body)`` is
    the JSON of a normal answer (default: the page width as one word); ``respond(handler, body)``, when
    it returns True, has replied itself (any fault); ``respond_get`` the same for ``GET /v1/models``."""

    def __init__(self, *, fail_first: int = 0, hang: bool = False, die_after: int | None = None, reject_fields=(),
                 answer: Callable[[dict], Any] = width_answer,
                 respond: Callable[[Handler, dict], bool] | None = None,
                 respond_get: Callable[[Handler], bool] | None = None,
                 models: tuple[str, ...] = (SERVED_MODEL,)) -> None:
        self.fail_first, self.hang, self.die_after, self.reject_fields = fail_first, hang, die_after, set(reject_fields)
        self.answer, self.respond, self.respond_get, self.models = answer, respond, respond_get, models
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.gets: list[dict] = []
        self.request_times: list[float] = []
        self.answered = 0
        self.sent_bytes = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        handler = type("BoundHandler", (Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.release.set()
            self.httpd.shutdown()
            self.httpd.server_close()  # nothing listens any more: connections are refused
