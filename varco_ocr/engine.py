"""The local OCR engine: a VARCO-VISION-2.0 checkpoint run with transformers, exactly as the model card
runs it (one user turn: the image, then ``<ocr>``; chat template with the generation prompt; greedy;
decoded with special tokens kept, since the tags are special tokens).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from PIL import Image

from varco_ocr import model_spec
from varco_ocr.document import Page, Word
from varco_ocr.errors import ModelLoadError
from varco_ocr.layout import build_page
from varco_ocr.parsing import GroundingAnswer, NormBox, parse_grounding_answer, parse_ocr_answer, to_pixels
from varco_ocr.prefetch import prefetched
from varco_ocr.preprocessing import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_LONG_SIDE,
    ImageSource,
    load_image,
    prepare_for_model,
    upscaled_size,
)

if TYPE_CHECKING:
    from varco_ocr.settings import EngineSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = model_spec.DEFAULT_MAX_NEW_TOKENS
_END_TOKENS = (model_spec.IM_END, model_spec.END_OF_TEXT)


@dataclass(frozen=True)
class Generation:
    """One decoded answer and what is known about how it ended."""

    text: str
    hit_token_limit: bool
    looped: bool
    confidences: tuple[float | None, ...] = ()  # per <char> entry, in order


@dataclass(frozen=True)
class PageBatch:
    """One batch for ``OCREngine.ocr_batches``: its images, their page numbers and dpis, and any
    ``tag`` the caller needs back with the pages (e.g. which documents they belong to)."""

    images: Sequence[ImageSource]
    indices: Sequence[int] | None = None
    dpis: Sequence[float | None] | None = None
    tag: Any = None


def _pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]


@dataclass(frozen=True)
class GroundedBox:
    phrase: str
    bbox: tuple[int, int, int, int]  # pixels of the original image
    box: NormBox  # normalised, as the model answered


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
                "fp32": torch.float32, "float32": torch.float32}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (use auto, bf16, fp16 or fp32)") from None


def pick_attention() -> str:
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "sdpa"


_API_LOCAL = "give OCREngine(model=...) a local model folder"
_CLI_LOCAL = "pass --model PATH for a local model folder"


def _download_advice(model: str, local: str) -> str:
    return f"download the weights once with a network (`hf download {model}`) and set HF_HUB_OFFLINE=1, or {local}"


def _source_error(model: str, problem) -> ModelLoadError:
    """The error for a :class:`varco_ocr.hub.SourceProblem`, advising in library and CLI terms."""
    if problem.kind == "not_a_folder":  # the user meant a folder: hub advice would point the wrong way
        return ModelLoadError(problem.reason)
    if problem.kind == "offline":  # HF_HUB_OFFLINE is already set: advise what is still missing
        fetch = f"download the weights first (`hf download {model}`, with a network)"
        return ModelLoadError(problem.reason, f"{fetch}, or {_API_LOCAL}", f"{fetch}, or {_CLI_LOCAL}")
    return ModelLoadError(problem.reason, _download_advice(model, _API_LOCAL), _download_advice(model, _CLI_LOCAL))


def _load_error(model: str, err: BaseException) -> ModelLoadError:
    """A loader failure after the source checks passed: a folder that is not a model, a hub id that does not
    exist or is gated, a network failure mid-download."""
    from varco_ocr.hub import hub_offline

    reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
    if os.path.isdir(model):
        return ModelLoadError(f"cannot load model folder {model}: {reason[:200]}")
    if hub_offline():
        fetch = f"only cached weights are used with HF_HUB_OFFLINE set; download them first (`hf download {model}`)"
        return ModelLoadError(f"cannot load model {model!r}: {reason[:200]}", f"{fetch}, or {_API_LOCAL}",
                              f"{fetch}, or {_CLI_LOCAL}")
    return ModelLoadError(f"cannot load model {model!r}: {reason[:200]}", _download_advice(model, _API_LOCAL),
                          _download_advice(model, _CLI_LOCAL))


def _fail_fast_when_unreachable(model: str, timeout: float = 3.0) -> None:
    """Without a network the hub client retries for about a minute before giving up, and a folder that does not
    exist reaches the hub as a malformed repo id; checking the source first says the right thing at once."""
    from varco_ocr.hub import source_problem

    problem = source_problem(model, timeout)
    if problem is not None:
        raise _source_error(model, problem)


def _token_counter(on_tokens: Callable[[int], None]):
    """A transformers streamer that only counts: ``generate`` puts the prompt first, then each step's new
    tokens (one per batch row); nothing is decoded, so it costs nothing per step."""
    from transformers.generation.streamers import BaseStreamer

    class TokenCounter(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value) -> None:
            if self.prompt_seen:
                on_tokens(int(value.numel()))
            self.prompt_seen = True

        def end(self) -> None:
            pass

    return TokenCounter()


def read_words(gen: Generation, width: int, height: int) -> tuple[list[Word], bool, int]:
    """An answer's words in pixels of a ``width`` x ``height`` image, whether it was cut short
    (ended inside an entry, hit the token limit or the loop guard), and how many words were dropped
    because their box lay wholly outside the image."""
    answer = parse_ocr_answer(gen.text)
    words = []
    for pw in answer.words:
        conf = gen.confidences[pw.entry] if pw.entry < len(gen.confidences) else None
        words.append(Word(text=pw.text, bbox=to_pixels(pw.box, width, height), confidence=None if conf is None else round(conf, 4)))
    return words, answer.truncated or gen.hit_token_limit or gen.looped, answer.dropped_boxes


def page_from_generation(
    gen: Generation, *, width: int, height: int, index: int = 0, dpi: float | None = None, keep_raw: bool = False
) -> Page:
    """Parse an answer and build the page in original-image pixels: the one page assembly every
    backend (local engine, OpenAI-compatible server) goes through, so they yield the same document."""
    words, truncated, dropped_boxes = read_words(gen, width, height)
    return build_page(words, index=index, width=width, height=height, truncated=truncated,
                      raw=gen.text if keep_raw else None, dpi=dpi, dropped_boxes=dropped_boxes)


class OCREngine:
    """Load a VARCO-VISION-2.0 model once and OCR images with it.

    >>> engine = OCREngine()                       # NCSOFT/VARCO-VISION-2.0-1.7B-OCR
    >>> page = engine.ocr("receipt.png")           # Page: words in reading order, original pixels
    >>> pages = engine.ocr_batch(images, batch_size=4)
    """

    def __init__(
        self,
        model: str = model_spec.DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        min_long_side: int = DEFAULT_MIN_LONG_SIDE,
        max_grid: int = model_spec.DEFAULT_MAX_GRID,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        keep_raw: bool = False,
        loop_guard: bool = True,
        attn_implementation: str | None = None,
        split_truncated: bool = False,
        require_ocr_tokens: bool = True,
        prefetch: bool = True,
    ) -> None:
        import torch
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        self.model_name = str(model)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.max_new_tokens = max_new_tokens
        self.min_long_side = min_long_side
        self.max_grid = max_grid  # applied to the processor and model config once loaded (below)
        self.max_pixels = max_pixels
        self.keep_raw = keep_raw
        self.loop_guard = loop_guard
        self.split_truncated = split_truncated  # re-read truncated pages as bands (varco_ocr.bands)
        # Pre-process the next batch in a thread while this one generates (varco_ocr.prefetch);
        # off, everything runs on the calling thread (same results, measured by benchmarks/engine_overlap.py).
        self.prefetch = prefetch
        self._prefetch_copy = None  # the prefetch thread's own processor (tokenizers are not thread-safe)
        _fail_fast_when_unreachable(self.model_name)
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_name)
            self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(
                self.model_name,
                dtype=self.dtype,
                attn_implementation=attn_implementation or pick_attention(),
            )
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise _load_error(self.model_name, e) from e
        except Exception as e:  # hub client errors (offline, gated, timeouts) have their own classes
            raise _load_error(self.model_name, e) from e
        self.model.to(self.device).eval()
        model_spec.configure_resolution(self.processor, self.model.config, max_grid)
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # batched generation appends after the prompt
        missing = [t for t in ("<char>", "</char>") if t not in tok.get_vocab()]
        if missing and require_ocr_tokens:  # `ask` needs only the chat model, not the OCR tags
            raise ModelLoadError(f"{self.model_name!r} is not a VARCO-VISION-2.0 OCR model: its tokenizer lacks {', '.join(missing)}")
        self._char_open = tok.convert_tokens_to_ids("<char>")
        self._char_close = tok.convert_tokens_to_ids("</char>")
        self._end_ids = {tok.convert_tokens_to_ids(t) for t in _END_TOKENS if t in tok.get_vocab()}
        if tok.pad_token_id is not None:
            self._end_ids.add(tok.pad_token_id)
        self._torch = torch

    @classmethod
    def from_settings(cls, settings: "EngineSettings", **options: Any) -> "OCREngine":
        """The engine for :class:`varco_ocr.settings.EngineSettings` (as the command line builds them);
        ``options`` are the constructor's other keywords (``require_ocr_tokens``, ``prefetch``, ...).
        Every field is a constructor keyword of the same name."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}, **options)

    # -- prompts ---------------------------------------------------------------------------------

    def prompt(self, task_text: str, num_images: int = 1, processor=None) -> str:
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": task_text}]
        return (processor or self.processor).apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    # -- generation ------------------------------------------------------------------------------

    def generate(self, images: Sequence[Image.Image], task_text: str, max_new_tokens: int | None = None,
                 on_tokens: Callable[[int], None] | None = None) -> list[Generation]:
        """One greedy generation per (already prepared) image, batched with left padding. ``on_tokens`` is
        called at every decoding step with the number of tokens just generated (one per batch row)."""
        return self.generate_inputs(self.model_inputs(images, task_text), max_new_tokens, on_tokens=on_tokens)

    def model_inputs(self, images: Sequence[Image.Image], task_text: str, processor=None):
        """Prepared images -> the model's inputs, on the CPU (pinned on CUDA, so the copy to the
        device can overlap): the processor's tiling, normalising, tokenising and padding, the CPU
        work a prefetch thread does ahead of ``generate_inputs``. ``processor`` is a copy of the
        engine's for that thread (a tokenizer is not safe to share between threads)."""
        processor = processor or self.processor
        prompt = self.prompt(task_text, processor=processor)
        inputs = processor(images=[[im] for im in images], text=[prompt] * len(images), padding=True, return_tensors="pt")
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if self.device.startswith("cuda"):
            for key, value in inputs.items():
                if isinstance(value, self._torch.Tensor):
                    inputs[key] = value.pin_memory()
        return inputs

    def generate_inputs(self, inputs, max_new_tokens: int | None = None,
                        on_tokens: Callable[[int], None] | None = None) -> list[Generation]:
        """Greedy generation from ``model_inputs``' output: one Generation per image."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from varco_ocr.confidence import word_confidences
        from varco_ocr.generation import ChosenTokenProbability, LoopGuard

        torch = self._torch
        max_new = max_new_tokens or self.max_new_tokens
        inputs = inputs.to(self.device, non_blocking=True) if self.device != "cpu" else inputs
        prompt_len = inputs["input_ids"].shape[1]
        recorder = ChosenTokenProbability()
        stopping = StoppingCriteriaList()
        guard = None
        if self.loop_guard:
            guard = LoopGuard(prompt_length=prompt_len, end_ids=tuple(sorted(self._end_ids)))
            stopping.append(guard)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=stopping,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                streamer=None if on_tokens is None else _token_counter(on_tokens),
            )
        generated = out[:, prompt_len:].cpu()
        probs = recorder.probabilities()
        results = []
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            # Cut at the first end-of-turn / padding token.
            end = next((i for i, t in enumerate(ids) if t in self._end_ids), None)
            ended = end is not None
            ids = ids[:end] if ended else ids
            looped = bool(guard is not None and guard.looped is not None and guard.looped[row])
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=False)
            for t in _END_TOKENS:
                text = text.replace(t, "")
            row_probs = probs[row, : len(ids)].tolist() if probs.numel() else [None] * len(ids)
            confs = word_confidences(ids, row_probs, self._char_open, self._char_close)
            results.append(
                Generation(text=text, hit_token_limit=not ended and not looped and len(ids) >= max_new, looped=looped, confidences=tuple(confs))
            )
        return results

    # -- OCR -------------------------------------------------------------------------------------

    def _load(self, image: ImageSource, name: str | None = None) -> Image.Image:
        return load_image(image, max_pixels=self.max_pixels, name=name)

    def page_from_generation(self, gen: Generation, *, width: int, height: int, index: int = 0, dpi: float | None = None) -> Page:
        """Parse an answer and build the page in original-image pixels."""
        return page_from_generation(gen, width=width, height=height, index=index, dpi=dpi, keep_raw=self.keep_raw)

    def ocr(self, image: ImageSource, index: int = 0) -> Page:
        """OCR one image (a path, bytes, file object or PIL image)."""
        return self.ocr_batch([image], batch_size=1, indices=[index])[0]

    def _by_model_size(self, images: Sequence[Image.Image]) -> list[int]:
        """Indices of ``images`` by the pixels the model will see (then by position): pages batched
        together pad to about the same size."""
        return sorted(range(len(images)), key=lambda i: (_pixels(upscaled_size(*images[i].size, self.min_long_side)), i))

    def ocr_batch(
        self,
        images: Sequence[ImageSource],
        batch_size: int = 4,
        indices: Sequence[int] | None = None,
        dpis: Sequence[float | None] | None = None,
        *,
        on_tokens: Callable[[int], None] | None = None,
        on_pages: Callable[[int], None] | None = None,
    ) -> list[Page]:
        """OCR many images with real batched generation; results equal one-by-one calls.

        Images are sorted by size so each batch pads as little as possible, then put back in order.
        Progress, for a caller that shows it: ``on_tokens(n)`` at every decoding step, ``on_pages(n)`` when
        a batch of ``n`` pages is read. The next batch is pre-processed in a thread while the current one
        generates (``prefetch``).
        """
        loaded = [self._load(im) for im in images]
        indices = list(indices) if indices is not None else [0] * len(loaded)
        dpis = list(dpis) if dpis is not None else [None] * len(loaded)
        order = self._by_model_size(loaded)
        step = max(1, batch_size)
        chunks = [[(i, loaded[i]) for i in order[start : start + step]] for start in range(0, len(order), step)]
        pages: list[Page | None] = [None] * len(loaded)
        for _, chunk, gens in self._read_chunks(chunks, lambda chunk: chunk, on_tokens):
            for (i, original), gen in zip(chunk, gens):
                w, h = original.size
                pages[i] = self.page_from_generation(gen, width=w, height=h, index=indices[i], dpi=dpis[i])
            if on_pages is not None:
                on_pages(len(chunk))
        if self.split_truncated:
            for i, page in enumerate(pages):
                if page is not None and page.truncated:
                    pages[i] = self._reread(loaded[i], page, batch_size, on_tokens)
        return [p for p in pages if p is not None]

    def ocr_batches(self, batches: Iterable[PageBatch], *, on_tokens: Callable[[int], None] | None = None,
                    isolate_errors: bool = False, stop: threading.Event | None = None,
                    ) -> Iterator[tuple[PageBatch, list[Page] | Exception]]:
        """OCR a stream of batches, each in one generate call, loading and pre-processing batch N+1
        in a thread while batch N generates: ``(batch, pages)`` in order, ``pages`` in the batch's
        order; each batch's pages equal ``ocr_batch(batch.images, batch_size=len(batch.images))``.

        For callers that form batches as pages arrive (the batch runner): with ``ocr_batch`` once per
        batch, the overlap cannot span calls and the accelerator waits while each batch is prepared.
        ``batches`` is iterated in the prefetch thread, one batch ahead.

        With ``isolate_errors``, a batch whose loading, preparation or generation raised an Exception
        comes back as ``(batch, exception)`` and the stream goes on with the next batch (already being
        prepared), so a caller can retry that batch's pages alone without losing the others.
        """

        def load(batch: PageBatch) -> list[tuple[int, Image.Image]]:
            loaded = [self._load(im) for im in batch.images]
            return [(i, loaded[i]) for i in self._by_model_size(loaded)]

        def read(batch: PageBatch, chunk: list[tuple[int, Image.Image]], gens: list[Generation]) -> list[Page]:
            n = len(chunk)
            indices = list(batch.indices) if batch.indices is not None else [0] * n
            dpis = list(batch.dpis) if batch.dpis is not None else [None] * n
            pages: list[Page | None] = [None] * n
            for (i, original), gen in zip(chunk, gens):
                w, h = original.size
                page = self.page_from_generation(gen, width=w, height=h, index=indices[i], dpi=dpis[i])
                pages[i] = self._reread(original, page, n, on_tokens) if self.split_truncated and page.truncated else page
            return [p for p in pages if p is not None]

        for batch, chunk, gens in self._read_chunks(batches, load, on_tokens, isolate_errors=isolate_errors, stop=stop):
            if isinstance(gens, Exception):
                yield batch, gens
                continue
            if not isolate_errors:
                yield batch, read(batch, chunk, gens)
                continue
            try:
                pages = read(batch, chunk, gens)
            except Exception as e:  # noqa: BLE001 - handed to the caller with its batch
                yield batch, e
            else:
                yield batch, pages

    def _read_chunks(self, jobs: Iterable[Any], load: Callable[[Any], list[tuple[int, Image.Image]]],
                     on_tokens: Callable[[int], None] | None = None, *, isolate_errors: bool = False,
                     stop: threading.Event | None = None) -> Iterator[tuple[Any, list[tuple[int, Image.Image]], list[Generation] | Exception]]:
        """Generate each job's ``(position, loaded image)`` pairs, ``load(job)``, in one batch:
        ``(job, pairs, generations)``. The next job's load, upscale and processor run in the prefetch
        thread, with its own copy of the processor, while this one generates. With
        ``isolate_errors`` a job that fails gives ``(job, pairs or [], exception)`` and the next goes on
        (an exception escaping the prefetch thread would end the stream and lose the job prepared ahead)."""
        processor = self._prefetch_processor() if self.prefetch else self.processor

        def prepare(job: Any) -> tuple[list[tuple[int, Image.Image]], Any]:
            try:
                chunk = load(job)
                prepared = [prepare_for_model(im, self.min_long_side) for _, im in chunk]
                return chunk, self.model_inputs(prepared, model_spec.OCR_PROMPT, processor)
            except Exception as e:  # noqa: BLE001 - this job's failure, not the stream's
                if not isolate_errors:
                    raise
                return [], e

        for job, (chunk, inputs) in prefetched(jobs, prepare, enabled=self.prefetch, stop=stop):
            if isinstance(inputs, Exception):
                yield job, chunk, inputs
                continue
            if not isolate_errors:
                yield job, chunk, self.generate_inputs(inputs, on_tokens=on_tokens)
                continue
            try:
                gens: list[Generation] | Exception = self.generate_inputs(inputs, on_tokens=on_tokens)
            except Exception as e:  # noqa: BLE001
                gens = e
            yield job, chunk, gens

    def _prefetch_processor(self):
        """The prefetch thread's processor: a copy made once, after the resolution was configured
        (the engine's own processor is not changed after loading)."""
        if self._prefetch_copy is None:
            import copy

            self._prefetch_copy = copy.deepcopy(self.processor)
        return self._prefetch_copy

    def _reread(self, original: Image.Image, page: Page, batch_size: int, on_tokens: Callable[[int], None] | None = None) -> Page:
        from varco_ocr.bands import reread_in_bands

        return reread_in_bands(original, page, lambda bands: self._read_bands(bands, batch_size, on_tokens))

    def _read_bands(self, images: Sequence[Image.Image], batch_size: int,
                    on_tokens: Callable[[int], None] | None = None) -> list[tuple[list[Word], bool, int]]:
        """Words (in band pixels), cut-short flag and dropped boxes of each band image, for varco_ocr.bands."""
        out: list[tuple[list[Word], bool, int]] = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = images[start : start + max(1, batch_size)]
            gens = self.generate([prepare_for_model(im, self.min_long_side) for im in chunk], model_spec.OCR_PROMPT,
                                 on_tokens=on_tokens)
            out.extend(read_words(gen, *im.size) for gen, im in zip(gens, chunk))
        return out

    def ground(self, image: ImageSource, phrase: str) -> tuple[list[GroundedBox], GroundingAnswer]:
        """Boxes for ``phrase`` (the ``<gro>`` task), in original-image pixels."""
        original = self._load(image)
        gen = self.generate([prepare_for_model(original, self.min_long_side)], f"{model_spec.GROUNDING_PROMPT}\n{phrase}")[0]
        answer = parse_grounding_answer(gen.text)
        # Cut short also when the answer stopped at the token limit or the loop guard between two complete
        # entries, where the text alone looks whole (as read_words does for OCR).
        answer = dataclasses.replace(answer, truncated=answer.truncated or gen.hit_token_limit or gen.looped)
        w, h = original.size
        boxes = [GroundedBox(phrase=p.text, bbox=to_pixels(b, w, h), box=b) for p in answer.phrases for b in p.boxes]
        return boxes, answer
