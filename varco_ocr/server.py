"""The server backend: OCR through OpenAI-compatible chat-completions servers (vLLM, ``transformers serve``).

Each page is pre-processed exactly as locally (EXIF, RGB, the model card's upscale) and sent as a
base64 PNG data URL followed by ``<ocr>`` in one user turn, greedy (``temperature`` 0), with
``max_tokens``, ``skip_special_tokens: false`` (VARCO's tags are special tokens) and ``logprobs``.
The answer goes through the same page assembly as the local engine
(:func:`varco_ocr.engine.page_from_generation`), so a page read through a server and locally with the
same weights gives the same document. Word confidences are computed as locally, the minimum token
probability over the word's text tokens, from the returned log-probabilities.

Concurrency: a thread pool keeps at most ``concurrency`` requests in flight, spread over the servers
(least busy first); results come back in page order. Faults: timeouts, connection errors, 429 and 5xx
are retried with exponential backoff and jitter (or after the server's ``Retry-After``, up to the
timeout), on another server when there is one; a server that refuses connections is rested for a while
so its pages go to the others. A page that still fails is returned as a Page with ``error`` set: the
batch runner records its document as not done, and the next run (resume) reads it again.

A hostile or broken server cannot hold or break a run: ``timeout`` bounds each whole request (connect,
send and every byte of the answer, not each socket read), an answer larger than a cap computed from
``max_new_tokens`` is refused without being read, and an answer that is not a well-formed chat
completion (wrong JSON types, non-numeric log-probabilities, text that is not valid Unicode) fails its
page alone, at once (greedy decoding would give the same answer again; resume asks again later).

Server differences handled on the fly, once per server: a server that rejects a request field we send
(``transformers serve`` refuses ``skip_special_tokens``) gets the request again without the optional
fields; a server that returns no log-probabilities gives null confidences (said once); a server that
strips special tokens returns answers without tags, which are recognised and reported with the fix.

The API key (``VARCO_OCR_API_KEY`` or ``OPENAI_API_KEY``) is sent as a bearer token and removed from
every message this module produces, before any truncation, with every prefix of it (4 characters or
more) that a cut could leave. Only the standard library is used for HTTP (urllib + threads): no
new dependency for a JSON POST.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from PIL import Image

from varco_ocr import model_spec
from varco_ocr.confidence import word_confidences
from varco_ocr.document import Page, Word
from varco_ocr.errors import VarcoOCRError
from varco_ocr.preprocessing import (
    DECODED_FILE,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_LONG_SIDE,
    ImageSource,
    grey_pixels,
    load_image,
    prepare_for_model,
)

if TYPE_CHECKING:
    from varco_ocr.settings import EngineSettings, ServerSettings

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0  # seconds for one whole request; a dense page at 8k tokens is slow
DEFAULT_RETRIES = 4
DEFAULT_CONCURRENCY = 8
# Answer size cap: a chat completion with per-token log-probabilities takes ~100-300 bytes per token
# (token, logprob, vLLM's byte list, JSON escapes); 4 KiB per token is a generous margin, and no
# legitimate answer is near 1 MiB below that. 8192 tokens -> 32 MiB.
BODY_BYTES_PER_TOKEN = 4096
MIN_BODY_CAP = 1 << 20
_ERROR_BODY_BYTES = 2000  # read of an HTTP error's body, for its message
_READ_SIZE = 1 << 16
# Fields vLLM understands and plain OpenAI-compatible servers may refuse; dropped on refusal.
OPTIONAL_FIELDS = ("skip_special_tokens", "logprobs", "top_logprobs")
_END_TOKENS = (model_spec.IM_END, model_spec.END_OF_TEXT)
# Four comma-separated numbers in 0..1: a box. Several of them in an answer without any <char> tag
# means the server removed the (special) tags while decoding.
_BARE_BOX = re.compile(r"(?:0|1)(?:\.\d+)?\s*,\s*(?:0|1)(?:\.\d+)?\s*,\s*(?:0|1)(?:\.\d+)?\s*,\s*(?:0|1)(?:\.\d+)?")

STRIPPED_TAGS_HELP = (
    "the server removed the <char>/<bbox> tags from its answers (it decodes with special tokens skipped), so "
    "they cannot be parsed; serve with special tokens kept: vLLM honours the request's skip_special_tokens: false "
    "(varco-ocr sends it); transformers serve always strips them"
)


class ServerError(VarcoOCRError):
    """A server problem that stops the run before it starts (no server answers, no model found)."""


class _Retryable(Exception):
    """Connection error, timeout, 429 or 5xx: worth another attempt (maybe on another server)."""

    def __init__(self, message: str, retry_after: float | None = None, refused: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.refused = refused


class _Rejected(Exception):
    """The server understood and refused the request (4xx other than 429)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.sent: set[str] = set()  # the request's fields, filled in by the caller


class _BadAnswer(Exception):
    """A complete answer that is not a usable chat completion (not JSON, wrong types, not valid
    Unicode, over the size cap): final for the page, not retried (greedy decoding would repeat it)."""


def api_key_from_env() -> str | None:
    return os.environ.get("VARCO_OCR_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` and without any prefix of it of 4 characters or more (what a cut
    through the secret leaves, or a server echoing part of it): replaced by ``***``. Call it before
    truncating: a cut never brings a prefix back (every such prefix contains the first 4 characters)."""
    if not secret:
        return text
    shortest = min(4, len(secret))
    prefixes = "|".join(re.escape(secret[:n]) for n in range(len(secret), shortest - 1, -1))  # longest first
    return re.sub(prefixes, "***", text)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header as seconds to wait: delay-seconds or an HTTP-date (a past date is 0).
    None when absent or unusable (negative, NaN, infinite, garbage): the caller's backoff applies."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_delay(attempt: int, retry_after: float | None, *, backoff: float, max_backoff: float, timeout: float,
                rand: Callable[[], float] | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``: the server's ``Retry-After`` exactly, but
    never longer than ``timeout`` (a server cannot park a page for an hour); else an exponential
    backoff capped at ``max_backoff``, scaled by a jitter in [0.5, 1.5) so that pages which failed
    together do not come back together."""
    if retry_after is not None:
        return min(retry_after, timeout)
    return min(max_backoff, backoff * (2 ** attempt)) * (0.5 + (rand or random.random)())


class _Deadline:
    """The end of one whole request (connect, send, every byte of the answer). A socket timeout bounds
    each read, not their sum: a server trickling a byte every few seconds would hold a page forever.
    A watchdog timer shuts the connection's socket when the time is up, which ends any blocked read."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            self._shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed: nothing to stop
            pass

    def cancel(self) -> None:
        self._timer.cancel()

    def message(self) -> str:
        return f"no complete answer within {self.seconds:g} s"


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type[http.client.HTTPConnection]:
    """``base`` whose socket the deadline watches from the moment it is connected (before TLS)."""

    class Watched(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection
            self._create_connection = lambda *a, **k: deadline.watch(create(*a, **k))

    return Watched


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, TLS) with connections under ``deadline``."""

    class HTTP(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kwargs):  # type: ignore[override]
            return super().do_open(_watched(http_class, deadline), req, **kwargs)

    class HTTPS(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kwargs):  # type: ignore[override]
            return super().do_open(_watched(http_class, deadline), req, **kwargs)

    return urllib.request.build_opener(HTTP(), HTTPS())


def read_capped(resp: Any, cap: int, deadline: _Deadline) -> bytes:
    """The whole body of ``resp``, refusing (``_BadAnswer``) a body over ``cap`` bytes without reading
    it all: at once when Content-Length says so, else (chunked, or no length) once ``cap`` is passed."""
    declared = resp.length if isinstance(getattr(resp, "length", None), int) else None
    if declared is not None and declared > cap:
        raise _BadAnswer(f"the answer is {declared} bytes, over the {cap}-byte limit for this request: refused unread")
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = resp.read1(_READ_SIZE)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                raise _BadAnswer(f"the answer is over the {cap}-byte limit for this request: refused after {cap} bytes")
            parts.append(chunk)
    except (TimeoutError, socket.timeout, ConnectionError, HTTPException, OSError, ValueError) as e:
        if deadline.expired:
            raise _Retryable(deadline.message()) from None
        raise _Retryable(f"connection lost ({type(e).__name__})") from None
    length = getattr(resp, "length", None)
    # Fewer bytes than Content-Length: cut off. Without a length or chunks (the body ends when the
    # connection closes), the watchdog's shutdown looks like the end: trust it only before the deadline.
    if length or (deadline.expired and length is None and not getattr(resp, "chunked", False)):
        raise _Retryable(deadline.message() if deadline.expired else "connection lost (answer cut short)")
    return b"".join(parts)


def normalise_url(url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1/`` -> ``http://host:8000/v1``."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        raise ValueError(f"--server {url!r}: expected an http:// or https:// URL such as http://gpu1:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


def image_data_url(image: Image.Image) -> str:
    """PNG (lossless: the server sees exactly the pixels the local engine would) as a data URL.
    A grey page goes as a single-channel PNG (a third of the pixels to compress: ~60 against ~160 ms
    for an A4 page at 2304 px); the server's RGB conversion restores exactly the same pixels."""
    buf = io.BytesIO()
    # speed over size: it crosses a local network once
    (grey_pixels(image) or image).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_STORED_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
# A compressed page is never much larger than its raw pixels; a file that is (metadata chunks, data
# after the image) is not sent as it is: reading and sending it would cost memory the pixels do not.
_STORED_SLACK = 64 * 1024


def stored_data_url(image: Image.Image) -> str | None:
    """The file ``image`` was decoded from, as a data URL, when that file is exactly what the model
    reads: a PNG or JPEG that ``load_image`` decoded from a file, used as it is (it and the upscale
    returned it unchanged: RGB, no EXIF rotation to apply, large enough), without transparency, and
    the file still the version decoded (size and mtime_ns).
    The server decodes it to the same pixels (Pillow, then ``convert("RGB")``: a no-op on RGB);
    nothing is decoded or encoded here. None otherwise (the pixels are encoded instead)."""
    from PIL import ImageFile

    kind = _STORED_TYPES.get(getattr(image, "format", None) or "")
    decoded = image.info.get(DECODED_FILE)  # set by load_image only: not an image a caller opened or edited
    if not (isinstance(image, ImageFile.ImageFile) and kind and isinstance(decoded, tuple) and image.mode == "RGB"):
        return None
    filename, size, mtime_ns = decoded
    try:
        if "transparency" in image.info or getattr(image, "n_frames", 1) != 1:
            return None
        limit = image.width * image.height * 3 + _STORED_SLACK
        with open(filename, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return None  # the file changed since it was decoded: send the pixels that were read
            data = f.read(limit + 1)
    except (OSError, ValueError):  # gone since it was decoded, or unreadable: send the pixels we have
        return None
    if len(data) > limit:  # mostly not pixels: send the pixels instead
        return None
    return f"data:{kind};base64," + base64.b64encode(data).decode("ascii")


def page_data_url(image: Image.Image) -> str:
    """What to send for a prepared page: the file's own bytes when they are the page as the model
    reads it (``stored_data_url``), else the pixels as PNG (``image_data_url``)."""
    return stored_data_url(image) or image_data_url(image)


def ocr_request(model: str, image_url: str, max_tokens: int) -> dict[str, Any]:
    """The chat-completions body for one page (as the model card: image then ``<ocr>``, greedy)."""
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": model_spec.OCR_PROMPT},
                ],
            }
        ],
        "temperature": 0,
        "max_tokens": max_tokens,
        "skip_special_tokens": False,
        "logprobs": True,
    }


def confidences_from_logprobs(tokens: Sequence[str], logprobs: Sequence[float | None]) -> list[float | None]:
    """Per ``<char>`` entry, the minimum probability of its text tokens, as the local engine computes
    it; here the tokens are the strings a server returns with its log-probabilities (``<char>`` and
    ``</char>`` are single tokens in VARCO's tokenizer, so they appear as such)."""
    probs = [0.0 if lp is None else math.exp(lp) for lp in logprobs]
    return word_confidences(list(tokens), probs, "<char>", "</char>")


def looks_tag_stripped(text: str) -> bool:
    """An answer with boxes but no ``<char>`` tag: the server dropped VARCO's special tokens."""
    return "<char>" not in text and "<bbox>" not in text and len(_BARE_BOX.findall(text)) >= 1


@dataclass(frozen=True)
class Completion:
    """The parts of a chat completion we use, checked: ``logprobs`` is None when the server sent none."""

    text: str
    finish_reason: str | None
    tokens: tuple[str, ...] | None = None
    logprobs: tuple[float, ...] | None = None


def _unicode_text(value: str, where: str) -> str:
    """``value`` if it is valid Unicode; a lone surrogate (JSON allows ``\\ud800``) cannot be written
    as UTF-8 by any exporter, and replacing it would change what the model read: the answer is bad."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _BadAnswer(f"{where} is not valid Unicode (lone surrogate U+{ord(value[e.start]):04X} at character {e.start})") from None
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_completion(payload: Any) -> Completion:
    """A chat-completions answer's first choice: text, finish reason and per-token log-probabilities,
    every type checked. Anything else raises _BadAnswer naming the field: a malformed answer fails
    its page with a message, never with a traceback."""
    if not isinstance(payload, dict):
        raise _BadAnswer(f"the answer is a JSON {_kind(payload)}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _BadAnswer(f"'choices' is {_kind(choices) if not isinstance(choices, list) else 'empty'}, not a list of choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _BadAnswer(f"choices[0] is a {_kind(choice)}, not an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _BadAnswer(f"choices[0].message is a {_kind(message)}, not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _BadAnswer(f"choices[0].message.content is a {_kind(content)}, not text")
    text = _unicode_text(content or "", "choices[0].message.content")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise _BadAnswer(f"choices[0].finish_reason is a {_kind(finish)}, not text")
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return Completion(text, finish)
    if not isinstance(logprobs, dict):
        raise _BadAnswer(f"choices[0].logprobs is a {_kind(logprobs)}, not an object")
    entries = logprobs.get("content")
    if entries is None:
        return Completion(text, finish)
    if not isinstance(entries, list):
        raise _BadAnswer(f"choices[0].logprobs.content is a {_kind(entries)}, not a list")
    tokens, values = [], []
    for i, entry in enumerate(entries):
        where = f"choices[0].logprobs.content[{i}]"
        if not isinstance(entry, dict):
            raise _BadAnswer(f"{where} is a {_kind(entry)}, not an object")
        token, logprob = entry.get("token"), entry.get("logprob")
        if not isinstance(token, str):
            raise _BadAnswer(f"{where}.token is a {_kind(token)}, not text")
        # bool is an int to Python, not a number to JSON; a log-probability is <= 0 (-inf allowed: p = 0)
        if isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or math.isnan(logprob) or logprob > 0:
            raise _BadAnswer(f"{where}.logprob is {logprob!r}, not a log-probability (a number <= 0)")
        tokens.append(token)
        values.append(float(logprob))
    return Completion(text, finish, tuple(tokens), tuple(values)) if entries else Completion(text, finish)


@dataclass(frozen=True)
class ServerAnswer:
    text: str
    hit_token_limit: bool
    confidences: tuple[float | None, ...]
    has_logprobs: bool
    server: str


@dataclass
class _Server:
    url: str
    in_flight: int = 0
    assigned: int = 0
    done: int = 0
    failed_attempts: int = 0
    failures_in_a_row: int = 0
    resting_until: float = 0.0
    rests: int = 0
    dropped_fields: set[str] = field(default_factory=set)
    warned_no_logprobs: bool = False


@dataclass
class ServerStats:
    url: str
    pages: int
    failed_attempts: int


class ServerBackend:
    """OCR through one or more OpenAI-compatible servers; a batch runner backend.

    >>> backend = ServerBackend(["http://gpu1:8000/v1", "http://gpu2:8000/v1"], concurrency=32)
    >>> pages = backend.ocr_batch(images, indices=[0, 1, 2])
    """

    # The batch runner renders pages for this backend in a thread, not a child process: the main
    # thread only waits for the request workers here, and the process costs more than it offloads
    # (shared-memory copies both sides, ~120 ms/page for an A4 page against 7-11 ms to render a text
    # PDF page). Measured with the instant server of benchmarks/client_floor.py, 10 A4 pages, client
    # CPU per page (wall per page): PNG scans 186-195 (297-362) ms in a process, 140-143 (204-276) ms
    # in a thread; PDF pages 325-377 (578-945) ms against 239-240 (525-535) ms.
    render_in_thread = True
    # EngineSettings fields the server decides where it is started (vLLM's or transformers' own flags),
    # so from_settings does not pass them on.
    SERVER_DECIDES = frozenset({"device", "dtype", "max_grid"})

    def __init__(
        self,
        urls: Sequence[str],
        *,
        model: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        rest_seconds: float = 10.0,
        max_new_tokens: int = model_spec.DEFAULT_MAX_NEW_TOKENS,
        min_long_side: int = DEFAULT_MIN_LONG_SIDE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        keep_raw: bool = False,
        split_truncated: bool = False,
        api_key: str | None = None,
        notify: Callable[[str], None] | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        if not urls:
            raise ValueError("give at least one --server URL")
        if concurrency < 1 or timeout <= 0 or retries < 0:
            raise ValueError("--concurrency and --timeout must be positive, retries not negative")
        self.servers = [_Server(normalise_url(u)) for u in urls]
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.rest_seconds = rest_seconds
        self.max_new_tokens = max_new_tokens
        self.min_long_side = min_long_side
        self.max_pixels = max_pixels
        self.keep_raw = keep_raw
        self.split_truncated = split_truncated
        # The largest answer read: a server cannot make the client hold more than this in memory.
        self.max_body_bytes = max_body_bytes or max(MIN_BODY_CAP, BODY_BYTES_PER_TOKEN * max_new_tokens)
        self._api_key = api_key if api_key is not None else api_key_from_env()
        self._notify = notify or (lambda message: log.warning("%s", message))
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self.not_ocr = 0  # pages whose non-empty answer held no word entry
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="varco-ocr-server")
        self.model_name = self.discover_model() if model is None else self._reachable(model)

    @classmethod
    def from_settings(cls, settings: "EngineSettings", server: "ServerSettings", **options: Any) -> "ServerBackend":
        """The backend for :class:`varco_ocr.settings.EngineSettings` and ``ServerSettings`` (as the
        command line builds them); ``options`` are the constructor's other keywords (``notify``, ...).
        ``device``, ``dtype`` and ``max_grid`` are the server's own (set where it is started): the
        client cannot choose them (listed in ``SERVER_DECIDES``)."""
        return cls(server.urls, model=settings.model if server.model_given else None, concurrency=server.concurrency,
                   timeout=server.timeout, max_new_tokens=settings.max_new_tokens, min_long_side=settings.min_long_side,
                   max_pixels=settings.max_pixels, keep_raw=settings.keep_raw, split_truncated=settings.split_truncated,
                   **options)

    # -- plumbing --------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def _clip(self, text: str, limit: int) -> str:
        """Redacted, then cut: the other order can leave the start of the key at the cut."""
        return self._redact(text)[:limit]

    def say_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        self._notify(self._redact(message))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _open(self, url: str, body: dict[str, Any] | None, deadline: _Deadline):
        """The response of one request whose connection ``deadline`` watches (the caller reads the
        body, then cancels it). HTTP errors become _Retryable (429, 5xx) or _Rejected, their body
        redacted before it is cut for the message."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, headers=self._headers(), method="GET" if body is None else "POST")
        try:
            return _opener(deadline).open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                text = e.read(_ERROR_BODY_BYTES).decode("utf-8", "replace").strip().replace("\n", " ")
            except (TimeoutError, ConnectionError, HTTPException, OSError, ValueError):
                text = ""
            e.close()
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code} {self._clip(text, 200)}",
                                 retry_after=retry_after_seconds(e.headers.get("Retry-After"))) from None
            raise _Rejected(e.code, self._clip(text, 500)) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ConnectionRefusedError):
                raise _Retryable("connection refused", refused=True) from None
            if deadline.expired or isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable(deadline.message()) from None
            raise _Retryable(f"cannot connect ({self._redact(str(reason))})") from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(deadline.message()) from None
        except (ConnectionError, HTTPException, OSError) as e:
            if deadline.expired:
                raise _Retryable(deadline.message()) from None
            raise _Retryable(f"connection failed ({type(e).__name__}: {self._redact(str(e))})") from None

    def _request_json(self, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One request under the deadline; its answer, a JSON object of at most ``max_body_bytes``."""
        deadline = _Deadline(self.timeout)
        try:
            with self._open(url, body, deadline) as resp:
                raw = read_capped(resp, self.max_body_bytes, deadline)
        finally:
            deadline.cancel()
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise _BadAnswer("the answer is not JSON") from None
        if not isinstance(payload, dict):
            raise _BadAnswer(f"the answer is a JSON {type(payload).__name__}, not an object")
        return payload

    # -- model discovery -------------------------------------------------------------------------

    def discover_model(self) -> str:
        """The model the servers serve, from ``GET /v1/models`` (VARCO's first, else the first).
        Raises ServerError "no server answered" when none can be reached, and "cannot discover the
        served model" only when a server answered without naming one."""
        unreachable, answered = [], []
        for server in self.servers:
            try:
                payload = self._request_json(server.url + "/models", None)
            except _Retryable as e:
                unreachable.append(f"{server.url} ({e})")
                continue
            except (_Rejected, _BadAnswer) as e:
                answered.append(f"{server.url}: {e}")
                continue
            data = payload.get("data")
            ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]] \
                if isinstance(data, list) else []
            if ids:
                varco = [i for i in ids if "varco" in i.lower()]
                return (varco or ids)[0]
            answered.append(f"{server.url}: /models lists no model")
        if not answered:
            raise ServerError(self._clip("no server answered: " + "; ".join(unreachable), 600))
        raise ServerError("cannot discover the served model (" + self._clip("; ".join(answered + unreachable), 400)
                          + "); pass --model NAME")

    def _reachable(self, model: str) -> str:
        """``model``, once some server has answered at all (any HTTP status): with every server down
        the run stops here with one line instead of failing each page after its retries."""
        unreachable = []
        for server in self.servers:
            try:
                self._request_json(server.url + "/models", None)
            except _Retryable as e:
                unreachable.append(f"{server.url} ({e})")
                continue
            except (_Rejected, _BadAnswer):
                pass  # it answered; whether it lists models does not matter when the name is given
            return model
        raise ServerError(self._clip("no server answered: " + "; ".join(unreachable), 600))

    # -- scheduling ------------------------------------------------------------------------------

    def _pick(self, avoid: _Server | None) -> _Server:
        """The least busy server that is not resting (another than ``avoid`` when possible); when
        every server rests, the one that wakes first."""
        now = time.monotonic()
        with self._lock:
            awake = [s for s in self.servers if s.resting_until <= now]
            if avoid is not None and len(awake) > 1:
                awake = [s for s in awake if s is not avoid]
            pool = awake or [min(self.servers, key=lambda s: s.resting_until)]
            chosen = min(pool, key=lambda s: (s.in_flight, s.assigned))
            chosen.in_flight += 1
            chosen.assigned += 1
            return chosen

    def _release(self, server: _Server, ok: bool, refused: bool = False, counted: bool = True) -> None:
        with self._lock:
            server.in_flight -= 1
            if not counted:  # a request we adapt to the server (fields it does not know): no fault
                return
            if ok:
                server.done += 1
                server.rests = server.failures_in_a_row = 0
                server.resting_until = 0.0
            else:
                server.failed_attempts += 1
                server.failures_in_a_row += 1
                if refused or server.failures_in_a_row >= 3:
                    # Nothing listens there (dead or restarting), or it keeps timing out / erroring:
                    # rest it, longer each time, so its pages go to the other servers.
                    server.resting_until = time.monotonic() + self.rest_seconds * (2 ** min(server.rests, 5))
                    server.rests += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        return retry_delay(attempt, retry_after, backoff=self.backoff, max_backoff=self.max_backoff, timeout=self.timeout)

    def _with_retries(self, call: Callable[[_Server], Any], what: str) -> Any:
        """Run ``call(server)`` until it succeeds: retryable faults move on (another server, after a
        jittered exponential backoff); refusals of optional fields are retried at once without them."""
        attempt = 0
        last: _Server | None = None
        while True:
            server = self._pick(last)
            try:
                result = call(server)
            except _Retryable as e:
                self._release(server, ok=False, refused=e.refused)
                last = server
                if attempt >= self.retries:
                    raise _Retryable(self._redact(f"{what}: {server.url}: {e} (gave up after {attempt + 1} attempts)")) from None
                time.sleep(self._delay(attempt, e.retry_after))
                attempt += 1
                continue
            except _Rejected as e:
                dropped = self._drop_refused_fields(server, e)
                self._release(server, ok=False, counted=not dropped)
                if dropped:
                    continue
                raise
            except _BadAnswer as e:
                self._release(server, ok=False)
                raise _BadAnswer(self._redact(f"{what}: {server.url}: the server's answer is unusable: {e}")) from None
            except BaseException:
                self._release(server, ok=False)
                raise
            self._release(server, ok=True)
            return result

    def _drop_refused_fields(self, server: _Server, e: _Rejected) -> bool:
        """A 400/422 naming a field of ours that the server does not know: stop sending it there."""
        if e.status not in (400, 422):
            return False
        sent = e.sent & set(OPTIONAL_FIELDS)
        named = {f for f in sent if f in e.body}
        if not named and any(w in e.body.lower() for w in ("unexpected", "extra", "unrecognized", "not permitted")):
            named = sent
        if not named:
            return False  # not about a field we can do without (or already without it): a real refusal
        with self._lock:
            server.dropped_fields |= named
        if "skip_special_tokens" in named:
            self.say_once(f"fields:{server.url}",
                          f"{server.url} refuses skip_special_tokens; its answers may lose VARCO's tags (vLLM keeps them)")
        return True

    # -- one page --------------------------------------------------------------------------------

    def _chat(self, server: _Server, body: dict[str, Any]) -> ServerAnswer:
        body = {k: v for k, v in body.items() if k not in server.dropped_fields}
        with self._slots:  # at most `concurrency` requests in flight, band re-reads included
            try:
                payload = self._request_json(server.url + "/chat/completions", body)
            except _Rejected as e:
                e.sent = set(body)
                raise
        completion = parse_completion(payload)
        text = completion.text
        for t in _END_TOKENS:
            text = text.replace(t, "")
        confidences: tuple[float | None, ...] = ()
        if completion.logprobs is not None and completion.tokens is not None:
            confidences = tuple(confidences_from_logprobs(completion.tokens, completion.logprobs))
        elif "logprobs" in body or "logprobs" in server.dropped_fields:
            self.say_once(f"logprobs:{server.url}",
                          f"{server.url} returns no log-probabilities: word confidences are null for its pages")
        return ServerAnswer(text, completion.finish_reason == "length", confidences, completion.logprobs is not None, server.url)

    def generate(self, image: Image.Image, max_new_tokens: int | None = None) -> "Any":
        """One prepared image -> the engine's Generation (text, limit flag, confidences)."""
        from varco_ocr.engine import Generation

        body = ocr_request(self.model_name, page_data_url(image), max_new_tokens or self.max_new_tokens)
        answer = self._with_retries(lambda server: self._chat(server, body), "OCR request")
        return Generation(text=answer.text, hit_token_limit=answer.hit_token_limit, looped=False, confidences=answer.confidences)

    def _ocr_one(self, image: ImageSource, index: int, dpi: float | None) -> Page:
        from varco_ocr.engine import page_from_generation, read_words

        original = load_image(image, max_pixels=self.max_pixels)
        w, h = original.size
        try:
            gen = self.generate(prepare_for_model(original, self.min_long_side))
        except (_Retryable, _Rejected, _BadAnswer) as e:
            return Page(index=index, width=w, height=h, dpi=dpi, error=f"page {index + 1}: OCR failed on the server ({self._redact(str(e))})")
        if looks_tag_stripped(gen.text):
            self.say_once("stripped", STRIPPED_TAGS_HELP)
            return Page(index=index, width=w, height=h, dpi=dpi,
                        error=f"page {index + 1}: the server's answer has no OCR tags (special tokens stripped)")
        page = page_from_generation(gen, width=w, height=h, index=index, dpi=dpi, keep_raw=self.keep_raw)
        if gen.text.strip() and not page.words:
            with self._lock:
                self.not_ocr += 1
            self.say_once("not-ocr", f"page {index + 1}: the server's answer is not OCR (no word entries); "
                          "such pages are kept with zero words and counted in the summary")
        if self.split_truncated and page.truncated:
            from varco_ocr.bands import reread_in_bands

            def read_bands(images: list[Image.Image]) -> list[tuple[list[Word], bool, int]]:
                gens = list(self._pool_map(lambda im: self.generate(prepare_for_model(im, self.min_long_side)), images))
                return [read_words(g, *im.size) for g, im in zip(gens, images)]

            try:
                page = reread_in_bands(original, page, read_bands)
            except (_Retryable, _Rejected, _BadAnswer) as e:
                self.say_once(f"bands:{index}", f"page {index + 1}: band re-read failed, keeping the truncated page ({self._redact(str(e))})")
        return page

    def _pool_map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        # Band requests run beside the page requests; a fresh small pool avoids waiting on our own
        # pool's workers (a page's worker is the one asking).
        with ThreadPoolExecutor(max_workers=max(1, min(len(items), self.concurrency))) as pool:
            yield from pool.map(fn, items)

    # -- the backend interface -------------------------------------------------------------------

    def ocr(self, image: ImageSource, index: int = 0) -> Page:
        return self.ocr_batch([image], indices=[index])[0]

    def ocr_batch(
        self,
        images: Sequence[ImageSource],
        batch_size: int = 4,
        indices: Sequence[int] | None = None,
        dpis: Sequence[float | None] | None = None,
    ) -> list[Page]:
        """OCR pages concurrently (at most ``concurrency`` requests in flight); results in input
        order. ``batch_size`` is accepted for the runner's interface: the server does the batching.
        A page that fails after the retries comes back with ``error`` set, never as an exception."""
        indices = list(indices) if indices is not None else [0] * len(images)
        dpis = list(dpis) if dpis is not None else [None] * len(images)
        return list(self._pool.map(lambda args: self._ocr_one_alone(*args), zip(images, indices, dpis)))

    def _ocr_one_alone(self, image: ImageSource, index: int, dpi: float | None) -> Page:
        """_ocr_one, where anything unforeseen fails this page only: an exception out of the pool
        would fail the whole batch, and the runner would request every page of it again."""
        try:
            return self._ocr_one(image, index, dpi)
        except Exception as e:  # noqa: BLE001 - reported on the page, with its type
            size = image.size if isinstance(image, Image.Image) else (0, 0)
            return Page(index=index, width=size[0], height=size[1], dpi=dpi,
                        error=f"page {index + 1}: OCR failed ({type(e).__name__}: {self._clip(str(e), 300)})")

    def stats(self) -> list[ServerStats]:
        with self._lock:
            return [ServerStats(s.url, s.done, s.failed_attempts) for s in self.servers]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------------
# `varco-ocr ask` through a server
# ------------------------------------------------------------------------------------------------


class ServerAsker:
    """A conversation about fixed pages (varco_ocr.ask) answered by an OpenAI-compatible server,
    streamed when asked. The server applies the chat template and counts the tokens; a prompt over its
    context comes back as its own one-line refusal."""

    def __init__(self, backend: ServerBackend, pages: Any, system: str | None = None, min_long_side: int = DEFAULT_MIN_LONG_SIDE) -> None:
        from varco_ocr.ask import Turn, images_for_model

        self.backend = backend
        self.pages = pages
        self.system = system
        self.turns: list[Turn] = []
        self._image_urls = [image_data_url(im) for im in images_for_model(pages.images, min_long_side)]

    def messages(self, question: str) -> list[dict[str, Any]]:
        from varco_ocr.ask import build_messages

        out = []
        for message in build_messages(len(self._image_urls), self.turns, question, self.system):
            urls = iter(self._image_urls)
            content = [
                {"type": "image_url", "image_url": {"url": next(urls)}} if part["type"] == "image" else part
                for part in message["content"]
            ]
            out.append({"role": message["role"], "content": content})
        return out

    def ask(self, question: str, *, max_new_tokens: int = 1024, temperature: float = 0.0,
            on_text: Callable[[str], None] | None = None) -> Any:
        from varco_ocr.ask import Answer, AskError, Turn

        body: dict[str, Any] = {"model": self.backend.model_name, "messages": self.messages(question),
                                "max_tokens": max_new_tokens, "temperature": temperature}
        def complete(server: _Server) -> tuple[str, str | None, Any]:
            payload = self.backend._request_json(server.url + "/chat/completions", body)
            completion = parse_completion(payload)
            return completion.text, completion.finish_reason, payload.get("usage")

        try:
            if on_text is None:
                text, finish, usage = self.backend._with_retries(complete, "question")
            else:
                text, finish, usage = self.backend._with_retries(lambda server: self._stream(server, body, on_text), "question")
            prompt_tokens, answer_tokens = _usage_count(usage, "prompt_tokens"), _usage_count(usage, "completion_tokens")
        except _Rejected as e:
            raise AskError(self.backend._redact(f"the server refused the question ({e})")) from None
        except (_Retryable, _BadAnswer) as e:
            raise AskError(self.backend._redact(str(e))) from None
        for t in _END_TOKENS:
            text = text.replace(t, "")
        answer = Answer(text=text, prompt_tokens=prompt_tokens, visual_tokens=None,
                        answer_tokens=answer_tokens, hit_token_limit=finish == "length")
        self.turns.append(Turn(question, text))
        return answer

    def _stream(self, server: _Server, body: dict[str, Any], on_text: Callable[[str], None]) -> tuple[str, str | None, dict]:
        """Server-sent events: ``data: {chunk}`` lines until ``data: [DONE]``. Once text has been
        printed a failure is final (retrying would print the answer twice)."""
        from varco_ocr.ask import AskError

        pieces: list[str] = []
        finish, usage = None, None
        received = 0
        cap = self.backend.max_body_bytes
        deadline = _Deadline(self.backend.timeout)  # the whole stream, as any request
        try:
            with self.backend._open(server.url + "/chat/completions", {**body, "stream": True}, deadline) as resp:
                try:
                    while True:
                        raw = resp.readline(cap + 1)
                        if not raw:
                            break
                        received += len(raw)
                        if received > cap:
                            raise _BadAnswer(f"the streamed answer is over the {cap}-byte limit for this request")
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        piece, chunk_finish, chunk_usage = _stream_chunk(data)
                        usage = chunk_usage or usage
                        finish = chunk_finish or finish
                        if piece:
                            pieces.append(piece)
                            on_text(piece)
                except (TimeoutError, socket.timeout, ConnectionError, HTTPException, OSError, ValueError, _BadAnswer) as e:
                    why = deadline.message() if deadline.expired else (str(e) if isinstance(e, _BadAnswer) else type(e).__name__)
                    if pieces:  # printed already: retrying would print the answer twice
                        raise AskError(self.backend._redact(f"the server's stream broke off ({why})")) from None
                    if isinstance(e, _BadAnswer):
                        raise
                    raise _Retryable(f"stream failed ({why})") from None
        finally:
            deadline.cancel()
        if deadline.expired and not pieces:
            raise _Retryable(deadline.message())
        return "".join(pieces), finish, usage


def _stream_chunk(data: str) -> tuple[str, str | None, Any]:
    """One server-sent event's chunk: (text piece, finish reason, usage), types checked."""
    try:
        chunk = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        raise _BadAnswer("a streamed chunk is not JSON") from None
    if not isinstance(chunk, dict):
        raise _BadAnswer(f"a streamed chunk is a JSON {_kind(chunk)}, not an object")
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _BadAnswer(f"a streamed chunk's 'choices' is a {_kind(choices)}, not a list")
    text, finish = "", None
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        piece = delta.get("content") if isinstance(delta, dict) else None
        if piece is not None and not isinstance(piece, str):
            raise _BadAnswer(f"a streamed delta's content is a {_kind(piece)}, not text")
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if reason is not None and not isinstance(reason, str):
            raise _BadAnswer(f"a streamed finish_reason is a {_kind(reason)}, not text")
        text += _unicode_text(piece or "", "a streamed delta's content")
        finish = reason or finish
    return text, finish, chunk.get("usage")


def _usage_count(usage: Any, key: str) -> int:
    """A token count from ``usage`` (0 when the server gives none); a non-count is a bad answer."""
    value = usage.get(key) if isinstance(usage, dict) else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _BadAnswer(f"usage.{key} is {value!r}, not a token count")
    return value
