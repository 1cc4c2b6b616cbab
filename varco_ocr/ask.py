"""`varco-ocr ask`: questions over one or several document pages (VARCO-VISION-2.0's multi-image input).

Every page becomes one image in a single user turn, followed by the question, through the model's chat
template. How the images are represented follows the model's training (verified-facts):

- one image: the full AnyRes tiling (upscaled by the model card's rule, as for OCR);
- several images: each gets only the fixed-size base tile (576 visual tokens + 1). The processor decides
  this per *sample*, so the images are passed as one nested list (``images=[[a, b, c]]``) and its
  ``batch_num_images`` is forwarded to ``generate``; a flat list would silently tile every image.

Follow-up questions (``--chat``) are text-only user turns after the previous answers, so the pages are
encoded once per turn in the same conversation. The prompt length (visual + text tokens) plus the answer
budget is checked against the model's context before generating: a clear error, never a crash deep in
the model or a silently cut prompt.

Pure parts (collecting pages, building messages) are separate from :class:`LocalAsker`, which runs a
conversation on the model and processor an :class:`~varco_ocr.engine.OCREngine` already loaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from varco_ocr.errors import InputError, VarcoOCRError
from varco_ocr.inputs import DEFAULT_DPI, PageRanges, open_document
from varco_ocr.preprocessing import DEFAULT_MAX_PIXELS, prepare_for_model, to_rgb

# The paper trains multi-image input with up to a dozen pages in one context.
DEFAULT_MAX_IMAGES = 12
DEFAULT_MAX_NEW_TOKENS = 1024


class AskError(VarcoOCRError):
    """A request `ask` cannot run: too many pages, too long a prompt, an unsuitable model, ..."""


@dataclass(frozen=True)
class PageSource:
    """Where one image of the question came from (page counted from 1)."""

    file: str
    page: int


@dataclass
class AskPages:
    images: list[Image.Image]
    sources: list[PageSource]


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    visual_tokens: int | None  # None when a server did the counting (it reports only the totals)
    answer_tokens: int
    hit_token_limit: bool


# ------------------------------------------------------------------------------------------------
# Pure: pages, messages
# ------------------------------------------------------------------------------------------------


def collect_pages(
    paths: Sequence[Path],
    pages: PageRanges | None = None,
    *,
    dpi: float = DEFAULT_DPI,
    password: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> AskPages:
    """Open every input in order (images, PDFs and TIFFs through ``varco_ocr.inputs``), checking the
    page budget *before* rendering anything. Raises InputError / AskError with one line."""
    if not paths:
        raise AskError("give at least one image, PDF or TIFF before the question")
    opened = []
    try:
        total = 0
        for path in paths:
            doc = open_document(Path(path), pages, dpi, password, max_pixels)
            opened.append(doc)
            total += len(doc.page_indices)
        if total > max_images:
            raise AskError(budget_error(total, sum(d.kind == "image" for d in opened),
                                        sum(d.kind != "image" for d in opened), max_images))
        result = AskPages([], [])
        for doc in opened:
            for page in doc.iter_pages():
                if page.image is None:  # an image's error already starts with its path; a page's does not
                    named = str(page.error).startswith(f"{doc.path}:")
                    raise InputError(str(page.error) if named else f"{doc.path}: {page.error}")
                result.images.append(page.image)
                result.sources.append(PageSource(str(doc.path), page.index + 1))
        return result
    finally:
        for doc in opened:
            doc.close()


def budget_error(total: int, images: int, documents: int, max_images: int) -> str:
    """Why ``total`` pages do not fit the page budget, with advice that applies: ``--pages`` selects pages of
    the ``documents`` (PDFs, TIFFs) only, never among the ``images`` given as separate files."""
    if images > max_images:
        return (f"{images} separate images are over the budget of {max_images} images in one question; give at most "
                f"{max_images} of them (--pages selects pages of PDFs and TIFFs only), or raise --max-images")
    room = (max_images - images) // max(documents, 1)  # pages per document that still fit beside the images
    head = f"{total} pages is over the budget of {max_images} images in one question"
    if room < 1:
        return (f"{head}; the {images} separate images leave no room for a page of each of the {documents} "
                "PDFs/TIFFs: ask about fewer files, or raise --max-images")
    example = "--pages 1" if room == 1 else f"--pages 1-{room}"
    beside = f" beside the {images} separate images" if images else ""
    return f"{head}; choose pages with --pages (e.g. {example}{beside}) or raise --max-images"


def build_messages(num_images: int, turns: Sequence[Turn], question: str, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages: [system], the first user turn holding every image then its question, the earlier
    answers and follow-ups as text turns, and ``question`` last."""
    if not question.strip():
        raise AskError("the question is empty")
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    questions = [t.question for t in turns] + [question]
    for i, q in enumerate(questions):
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)] if i == 0 else []
        content.append({"type": "text", "text": q})
        messages.append({"role": "user", "content": content})
        if i < len(turns):
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turns[i].answer}]})
    return messages


def images_for_model(images: Sequence[Image.Image], min_long_side: int) -> list[Image.Image]:
    """One image keeps the OCR path's upscale (it gets full AnyRes tiling); several are each reduced
    to one 384 px base tile by the processor, where upscaling first would only cost time."""
    if len(images) == 1:
        return [prepare_for_model(images[0], min_long_side)]
    return [to_rgb(im) for im in images]


def context_error(prompt_tokens: int, visual_tokens: int, max_new_tokens: int, context: int) -> str | None:
    """The one-line reason a prompt does not fit the model's context, or None when it fits."""
    if prompt_tokens + max_new_tokens <= context:
        return None
    return (
        f"the prompt is {prompt_tokens:,} tokens ({visual_tokens:,} of them visual) and the answer may take "
        f"{max_new_tokens:,} more, over the model's context of {context:,} tokens; ask about fewer pages "
        "(--pages), lower --max-new-tokens or --min-long-side, or set --max-context if the model allows more"
    )


# ------------------------------------------------------------------------------------------------
# Running a conversation on the local model
# ------------------------------------------------------------------------------------------------


@dataclass
class LocalAsker:
    """A conversation about fixed pages, run on an OCREngine's already-loaded model and processor."""

    engine: Any  # varco_ocr.engine.OCREngine (kept loose: only .model, .processor, .device, .dtype)
    pages: AskPages
    system: str | None = None
    max_context: int | None = None
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = images_for_model(self.pages.images, self.engine.min_long_side)
        self.context = self.max_context or model_context(self.engine.model.config)

    def prepare(self, question: str, max_new_tokens: int) -> tuple[Any, int]:
        """Processor inputs for ``question`` after the conversation so far, checked against the
        context; also the number of visual tokens in the prompt."""
        processor = self.engine.processor
        messages = build_messages(len(self.images), self.turns, question, self.system)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        try:
            inputs = processor(images=[list(self.images)], text=[prompt], return_tensors="pt")
        except ValueError as e:  # e.g. the template placed fewer <image> tokens than there are pages
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AskError(f"{self.engine.model_name!r} cannot take these {len(self.images)} images in one prompt "
                           f"(its chat template places no image for each page: {first[:160]}); "
                           "multi-image input needs a VARCO-VISION-2.0 model") from None
        image_token = self.engine.model.config.image_token_index
        visual = int((inputs["input_ids"] == image_token).sum())
        if len(self.images) > 1 and "batch_num_images" not in inputs:
            raise AskError(f"{self.engine.model_name!r} does not support multi-image input (not a VARCO-VISION-2.0 model)")
        if visual == 0:
            raise AskError(f"{self.engine.model_name!r}: its chat template places no image in the prompt")
        problem = context_error(int(inputs["input_ids"].shape[1]), visual, max_new_tokens, self.context)
        if problem:
            raise AskError(problem)
        return inputs, visual

    def ask(
        self,
        question: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer ``question`` (greedy unless ``temperature`` > 0); ``on_text`` receives the answer in
        pieces as it is generated. The turn is added to the conversation."""
        import torch
        from transformers import TextIteratorStreamer

        inputs, visual = self.prepare(question, max_new_tokens)
        inputs = inputs.to(self.engine.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.engine.dtype)
        prompt_len = int(inputs["input_ids"].shape[1])
        tokenizer = self.engine.processor.tokenizer
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        kwargs = dict(**inputs, max_new_tokens=max_new_tokens, num_beams=1, pad_token_id=tokenizer.pad_token_id, **sampling)
        if on_text is None:
            with torch.inference_mode():
                out = self.engine.model.generate(**kwargs)
        else:
            # Same decode as below (special tokens skipped), so the streamed pieces add up to the answer.
            streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            result: dict[str, Any] = {}

            def run() -> None:
                try:
                    with torch.inference_mode():
                        result["out"] = self.engine.model.generate(**kwargs, streamer=streamer)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    result["error"] = e
                    streamer.end()

            worker = threading.Thread(target=run, name="varco-ocr-ask", daemon=True)
            worker.start()
            for piece in streamer:
                on_text(piece)
            worker.join()
            if "error" in result:
                raise result["error"]
            out = result["out"]
        ids = out[0, prompt_len:].tolist()
        end_ids = {tokenizer.pad_token_id, *self.engine._end_ids} - {None}
        end = next((i for i, t in enumerate(ids) if t in end_ids), None)
        text = tokenizer.decode(ids if end is None else ids[: end + 1], skip_special_tokens=True)
        answer = Answer(
            text=text,
            prompt_tokens=prompt_len,
            visual_tokens=visual,
            answer_tokens=len(ids) if end is None else end + 1,
            hit_token_limit=end is None and len(ids) >= max_new_tokens,
        )
        self.turns.append(Turn(question, answer.text))
        return answer


def model_context(config: Any) -> int:
    """The language model's context length (``text_config.max_position_embeddings``)."""
    text = getattr(config, "text_config", config)
    value = getattr(text, "max_position_embeddings", None)
    if not value:
        raise AskError("the model config states no context length; give it with --max-context")
    return int(value)


def answer_record(question: str, answer: Answer, sources: Sequence[PageSource], model: str) -> dict[str, Any]:
    """The ``--json`` record of one answer."""
    return {
        "question": question,
        "answer": answer.text,
        "sources": [{"file": s.file, "page": s.page} for s in sources],
        "model": model,
        "tokens": {"prompt": answer.prompt_tokens, "visual": answer.visual_tokens, "answer": answer.answer_tokens},
        "hit_token_limit": answer.hit_token_limit,
    }


def run_session(
    asker: Any,
    question: str | None,
    *,
    chat: bool,
    stream: bool,
    as_json: bool,
    max_new_tokens: int,
    temperature: float,
    model_name: str,
    read_line: Callable[[], str | None],
    write: Callable[[str], None],
    prompt_mark: Callable[[], None] = lambda: None,
    warn: Callable[[str], None] = lambda message: None,
) -> int:
    """Ask ``question`` (and, with ``chat``, follow-ups from ``read_line`` until an empty line or end of
    input); print answers as text (streamed when ``stream``) or as JSON records, one per answer.
    ``asker`` is a LocalAsker or a server asker (anything with ``ask(question, ...) -> Answer`` and
    ``pages``). ``warn`` gets one line per text answer cut at the token limit. Returns the number of answers given."""
    import json

    given = 0
    while True:
        if question is None:
            if not chat:
                return given
            prompt_mark()
            line = read_line()
            if line is None or not line.strip():
                return given
            question = line.strip()
        on_text = write if (stream and not as_json) else None
        answer = asker.ask(question, max_new_tokens=max_new_tokens, temperature=temperature, on_text=on_text)
        if as_json:
            write(json.dumps(answer_record(question, answer, asker.pages.sources, model_name), ensure_ascii=False) + "\n")
        else:
            write(("" if on_text else answer.text) + "\n")
            if answer.hit_token_limit:  # the JSON record says it; plain text needs a line on stderr
                warn(f"the answer stopped at the token limit ({max_new_tokens}) and may be incomplete; "
                     "raise --max-new-tokens")
        given += 1
        question = None
