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
are retried with exponential backoff and jitter, on another server when there is one; a server that
refuses connections is rested for a while so its pages go to the others. A page that still fails is
returned as a Page with ``error`` set: the batch runner records its document as not done, and the next
run (resume) reads it again.

Server differences handled on the fly, once per server: a server that rejects a request field we send
(``transformers serve`` refuses ``skip_special_tokens``) gets the request again without the optional
fields; a server that returns no log-probabilities gives null confidences (said once); a server that
strips special tokens returns answers without tags, which are recognised and reported with the fix.

The API key (``VARCO_OCR_API_KEY`` or ``OPENAI_API_KEY``) is sent as a bearer token and removed from
every message this module produces. Only the standard library is used for HTTP (urllib + threads): no
new dependency for a JSON POST.
"""

from __future__ import annotations

import base64
import io
import json
import logging
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
from http.client import HTTPException
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from varco_ocr import model_spec
from varco_ocr.document import Page, Word
from varco_ocr.errors import VarcoOCRError
from varco_ocr.preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MIN_LONG_SIDE, ImageSource, load_image, prepare_for_model

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0  # seconds without a byte from the server; a dense page at 8k tokens is slow
DEFAULT_RETRIES = 4
DEFAULT_CONCURRENCY = 8
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


def api_key_from_env() -> str | None:
    return os.environ.get("VARCO_OCR_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def normalise_url(url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1/`` -> ``http://host:8000/v1``."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        raise ValueError(f"--server {url!r}: expected an http:// or https:// URL such as http://gpu1:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


def image_data_url(image: Image.Image) -> str:
    """PNG (lossless: the server sees exactly the pixels the local engine would) as a data URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # speed over size: it crosses a local network once
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
    from math import exp

    from varco_ocr.generation import word_confidences

    probs = [0.0 if lp is None else exp(lp) for lp in logprobs]
    return word_confidences(list(tokens), probs, "<char>", "</char>")


def looks_tag_stripped(text: str) -> bool:
    """An answer with boxes but no ``<char>`` tag: the server dropped VARCO's special tokens."""
    return "<char>" not in text and "<bbox>" not in text and len(_BARE_BOX.findall(text)) >= 1


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
        max_new_tokens: int = 8192,
        min_long_side: int = DEFAULT_MIN_LONG_SIDE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        keep_raw: bool = False,
        split_truncated: bool = False,
        api_key: str | None = None,
        notify: Callable[[str], None] | None = None,
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
        self._api_key = api_key if api_key is not None else api_key_from_env()
        self._notify = notify or (lambda message: log.warning("%s", message))
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self.not_ocr = 0  # pages whose non-empty answer held no word entry
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="varco-ocr-server")
        self.model_name = model or self.discover_model()

    # -- plumbing --------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

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

    def _open(self, url: str, body: dict[str, Any] | None, timeout: float):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, headers=self._headers(), method="GET" if body is None else "POST")
        try:
            return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the user's own server URL
        except urllib.error.HTTPError as e:
            text = e.read(2000).decode("utf-8", "replace").strip().replace("\n", " ")
            e.close()
            if e.code == 429 or e.code >= 500:
                retry_after = None
                try:
                    retry_after = float(e.headers.get("Retry-After", ""))
                except (TypeError, ValueError):
                    pass
                raise _Retryable(f"HTTP {e.code} {text[:200]}", retry_after=retry_after) from None
            raise _Rejected(e.code, text[:500]) from None
        except urllib.error.URLError as e:
            reason = e.reason
            refused = isinstance(reason, ConnectionRefusedError)
            raise _Retryable(f"cannot connect ({reason})", refused=refused) from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no answer within {timeout:g} s") from None
        except (ConnectionError, HTTPException, OSError) as e:
            raise _Retryable(f"connection failed ({type(e).__name__}: {e})") from None

    def _request_json(self, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        with self._open(url, body, self.timeout) as resp:
            try:
                raw = resp.read()
            except (TimeoutError, socket.timeout):
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            except (ConnectionError, HTTPException, OSError) as e:
                raise _Retryable(f"connection lost ({type(e).__name__})") from None
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable("the server's answer is not JSON") from None
        if not isinstance(payload, dict):
            raise _Retryable("the server's answer is not a JSON object")
        return payload

    # -- model discovery -------------------------------------------------------------------------

    def discover_model(self) -> str:
        """The model the servers serve, from ``GET /v1/models`` (VARCO's first, else the first)."""
        problems = []
        for server in self.servers:
            try:
                payload = self._request_json(server.url + "/models", None)
            except (_Retryable, _Rejected) as e:
                problems.append(f"{server.url}: {e}")
                continue
            ids = [m.get("id") for m in payload.get("data") or [] if isinstance(m, dict) and m.get("id")]
            if ids:
                varco = [i for i in ids if "varco" in i.lower()]
                return (varco or ids)[0]
            problems.append(f"{server.url}: /models lists no model")
        raise ServerError(self._redact("cannot discover the served model (" + "; ".join(problems)[:400] + "); pass --model NAME"))

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
        if retry_after is not None:
            return min(self.max_backoff, max(0.0, retry_after))
        return min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.5)

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
        try:
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"unexpected answer shape ({str(payload)[:120]})") from None
        for t in _END_TOKENS:
            text = text.replace(t, "")
        content = ((choice.get("logprobs") or {}).get("content")) if isinstance(choice.get("logprobs"), dict) else None
        confidences: tuple[float | None, ...] = ()
        if content:
            confidences = tuple(confidences_from_logprobs([c.get("token", "") for c in content], [c.get("logprob") for c in content]))
        elif "logprobs" in body or "logprobs" in server.dropped_fields:
            self.say_once(f"logprobs:{server.url}",
                          f"{server.url} returns no log-probabilities: word confidences are null for its pages")
        return ServerAnswer(text, choice.get("finish_reason") == "length", confidences, bool(content), server.url)

    def generate(self, image: Image.Image, max_new_tokens: int | None = None) -> "Any":
        """One prepared image -> the engine's Generation (text, limit flag, confidences)."""
        from varco_ocr.engine import Generation

        body = ocr_request(self.model_name, image_data_url(image), max_new_tokens or self.max_new_tokens)
        answer = self._with_retries(lambda server: self._chat(server, body), "OCR request")
        return Generation(text=answer.text, hit_token_limit=answer.hit_token_limit, looped=False, confidences=answer.confidences)

    def _ocr_one(self, image: ImageSource, index: int, dpi: float | None) -> Page:
        from varco_ocr.engine import page_from_generation, page_words

        try:
            original = load_image(image, max_pixels=self.max_pixels)
            gen = self.generate(prepare_for_model(original, self.min_long_side))
        except (_Retryable, _Rejected) as e:
            return Page(index=index, width=0, height=0, dpi=dpi, error=f"page {index + 1}: OCR failed on the server ({self._redact(str(e))})")
        w, h = original.size
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

            def read_bands(images: list[Image.Image]) -> list[tuple[list[Word], bool]]:
                gens = list(self._pool_map(lambda im: self.generate(prepare_for_model(im, self.min_long_side)), images))
                return [page_words(g, *im.size) for g, im in zip(gens, images)]

            try:
                page = reread_in_bands(original, page, read_bands)
            except (_Retryable, _Rejected) as e:
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
        return list(self._pool.map(lambda args: self._ocr_one(*args), zip(images, indices, dpis)))

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
        try:
            if on_text is None:
                payload = self.backend._with_retries(
                    lambda server: self.backend._request_json(server.url + "/chat/completions", body), "question")
                choice = payload["choices"][0]
                text, finish = choice["message"].get("content") or "", choice.get("finish_reason")
                usage = payload.get("usage") or {}
            else:
                text, finish, usage = self.backend._with_retries(lambda server: self._stream(server, body, on_text), "question")
        except _Rejected as e:
            raise AskError(self.backend._redact(f"the server refused the question ({e})")) from None
        except _Retryable as e:
            raise AskError(str(e)) from None
        except (KeyError, IndexError, TypeError) as e:
            raise AskError(f"unexpected answer from the server ({type(e).__name__}: {e})") from None
        for t in _END_TOKENS:
            text = text.replace(t, "")
        answer = Answer(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0), visual_tokens=None,
                        answer_tokens=int(usage.get("completion_tokens") or 0), hit_token_limit=finish == "length")
        self.turns.append(Turn(question, text))
        return answer

    def _stream(self, server: _Server, body: dict[str, Any], on_text: Callable[[str], None]) -> tuple[str, str | None, dict]:
        """Server-sent events: ``data: {chunk}`` lines until ``data: [DONE]``. Once text has been
        printed a failure is final (retrying would print the answer twice)."""
        pieces: list[str] = []
        finish, usage = None, {}
        with self.backend._open(server.url + "/chat/completions", {**body, "stream": True}, self.backend.timeout) as resp:
            try:
                for raw in resp:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
                        if piece:
                            pieces.append(piece)
                            on_text(piece)
            except (TimeoutError, socket.timeout, ConnectionError, HTTPException, OSError, json.JSONDecodeError) as e:
                if pieces:
                    from varco_ocr.ask import AskError

                    raise AskError(f"the server's stream broke off ({type(e).__name__})") from None
                raise _Retryable(f"stream failed ({type(e).__name__})") from None
        return "".join(pieces), finish, usage
