"""Conversation data: JSON-lines reading and validation, encoding with loss masks, batching.

One record per line, LLaVA style::

    {"id": "r1", "images": ["pages/a.png", "pages/b.png"],
     "conversations": [{"from": "human", "value": "<image>\\n<image>\\nWhich page has the total?"},
                       {"from": "gpt", "value": "The second."}]}

``image`` (one path) is accepted for ``images``; roles ``human``/``user``, ``gpt``/``assistant``, ``system``;
``role``/``content`` for ``from``/``value``. Image paths are relative to the JSON-lines file. Each ``<image>``
placeholder marks where an image goes; without placeholders the images go before the first user text.

Loss mask: the chat template (``varco_ocr.model_spec.CHAT_TEMPLATE``) wraps each assistant answer *and its
``<|im_end|>``* in a ``{% generation %}`` block, so the processor's assistant mask marks exactly the tokens
the model must learn to produce, the end of turn included; everything else is labelled -100.

Rules stated once:
- A malformed line, a missing image, a corrupt image: reported as ``file:line: reason`` and skipped, within
  a budget (``max_bad_samples`` and ``max_bad_fraction`` of the records read); beyond it the run aborts.
- Overlong samples (more tokens than ``context_length``): ``overlong: drop`` (default) drops them;
  ``overlong: truncate`` cuts the sequence on the right if every image token and at least one answer token
  stay inside the context, and drops it otherwise (images are never cut: the model would see a
  feature count that does not match its placeholders). Either way they are counted and logged, never
  silently corrupted.
- Multi-image samples (stage 3): the images go to the processor as one nested list, so each image gets its
  base tile only (576 + 1 tokens) and ``batch_num_images`` tells the model so; a flat list would tile every
  image. At most ``max_images_per_sample`` images.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from varco_ocr import model_spec

T = TypeVar("T")

log = logging.getLogger("training.data")

IGNORE_INDEX = -100
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataError(ValueError):
    """Data that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Conversation:
    where: str  # "file:line", for every message about this sample
    images: tuple[Path, ...]
    messages: tuple[dict[str, Any], ...]  # chat-template messages; image parts are {"type": "image"}


@dataclass
class BadSampleBudget:
    """Counts skipped samples. The run aborts once more than ``max_count`` samples were skipped, or, once
    every file has been read (``total`` known), more than ``max_fraction`` of the records."""

    max_count: int = 100
    max_fraction: float = 0.01
    total: int = 0  # records read
    total_known: bool = False
    skipped: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        message = f"{where}: {reason} (skipped)"
        log.warning(message)
        self.skipped.append(message)
        self.check()

    def check(self) -> None:
        n = len(self.skipped)
        over_fraction = self.total_known and n > self.max_fraction * self.total
        if n > self.max_count or over_fraction:
            raise DataError(
                f"too many bad samples: {n} skipped of {self.total} read (budget: {self.max_count} and "
                f"{self.max_fraction:.1%}); last: {self.skipped[-1]}"
            )


# --- reading -------------------------------------------------------------------------------------


def _message_parts(text: str, where: str) -> tuple[list[dict[str, Any]], int]:
    """``"<image>\\nWhat is it?"`` -> [{"type": "image"}, {"type": "text", "text": "What is it?"}], 1.
    The newline right after a placeholder is dropped: the template writes it."""
    pieces = text.split(model_spec.IMAGE_TOKEN)
    parts: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            parts.append({"type": "image"})
            if piece.startswith("\n"):
                piece = piece[1:]
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts, len(pieces) - 1


def parse_record(record: Any, base_dir: Path, where: str, max_images: int = 12) -> Conversation:
    """Validate one JSON record and turn it into a Conversation. Raises DataError(where: reason)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object")
    images = record.get("images", record.get("image", []))
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise DataError(f"{where}: 'images' must be a path or a list of paths")
    if len(images) > max_images:
        raise DataError(f"{where}: {len(images)} images, more than max_images_per_sample={max_images}")
    turns = record.get("conversations", record.get("messages"))
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: 'conversations' must be a non-empty list of turns")
    messages: list[dict[str, Any]] = []
    placeholders = 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: turn {i} is not an object")
        role = _ROLES.get(str(turn.get("from", turn.get("role", ""))))
        value = turn.get("value", turn.get("content"))
        if role is None:
            raise DataError(f"{where}: turn {i} has unknown role {turn.get('from', turn.get('role'))!r}")
        if not isinstance(value, str):
            raise DataError(f"{where}: turn {i} has no text 'value'")
        if role == "assistant" and model_spec.IMAGE_TOKEN in value:
            raise DataError(f"{where}: turn {i}: an assistant turn cannot hold <image>")
        parts, n = _message_parts(value, where)
        placeholders += n
        messages.append({"role": role, "content": parts})
    body = [m["role"] for m in messages if m["role"] != "system"]
    if messages[0]["role"] == "system" and any(m["role"] == "system" for m in messages[1:]) or (
        messages[0]["role"] != "system" and "system" in [m["role"] for m in messages]
    ):
        raise DataError(f"{where}: a system turn may only come first")
    if not body or body[0] != "user" or any(a == b for a, b in zip(body, body[1:])):
        raise DataError(f"{where}: turns must alternate user/assistant, starting with the user")
    if "assistant" not in body:
        raise DataError(f"{where}: no assistant turn to learn from")
    if placeholders == 0 and images:
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] = [{"type": "image"} for _ in images] + first_user["content"]
    elif placeholders != len(images):
        raise DataError(f"{where}: {placeholders} <image> placeholders for {len(images)} images")
    paths = tuple((base_dir / p) if not Path(p).is_absolute() else Path(p) for p in images)
    return Conversation(where=where, images=paths, messages=tuple(messages))


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, read as it goes; unreadable files are one DataError."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot open data file ({e.strerror})") from None
    with handle:
        try:
            yield from enumerate(handle, start=1)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None


def read_jsonl_samples(
    paths: Sequence[str | Path],
    budget: BadSampleBudget,
    parse: Callable[[Any, Path, str], T],
    images_of: Callable[[T], Sequence[Path]],
    what: str = "samples",
) -> list[T]:
    """Every valid record of the JSON-lines files, parsed by ``parse(record, base_dir, where)``.

    Blank lines are ignored; a line that is not JSON, fails ``parse`` (``DataError``) or names an image
    that does not exist is skipped through ``budget``, which aborts the run beyond its limit."""
    out: list[T] = []
    for path in map(Path, paths):
        for lineno, line in _numbered_lines(path):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            budget.total += 1
            try:
                sample = parse(json.loads(line), path.parent, where)
            except json.JSONDecodeError as e:
                budget.skip(where, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            except DataError as e:
                budget.skip(where, str(e).removeprefix(f"{where}: "))
                continue
            missing = [p for p in images_of(sample) if not p.is_file()]
            if missing:
                budget.skip(where, f"image not found: {missing[0]}")
                continue
            out.append(sample)
    budget.total_known = True
    if budget.skipped:
        budget.check()
    if not out:
        raise DataError(f"no usable {what} in {', '.join(str(p) for p in paths)}")
    return out


def read_conversations(paths: Sequence[str | Path], budget: BadSampleBudget, max_images: int = 12) -> list[Conversation]:
    """Every valid conversation of the JSON-lines files; bad lines and missing images are skipped via ``budget``."""
    return read_jsonl_samples(
        paths, budget, lambda record, base, where: parse_record(record, base, where, max_images),
        lambda c: c.images,
    )


# --- encoding ------------------------------------------------------------------------------------


@dataclass
class EncodedSample:
    where: str
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor  # (T,), IGNORE_INDEX outside assistant answers
    pixel_values: torch.Tensor | None  # (total patches of this sample's images, 3, H, W)
    image_sizes: torch.Tensor | None  # (images, 2)
    num_images: int

    @property
    def num_target_tokens(self) -> int:
        # After the next-token shift: label t is predicted from position t-1, so label 0 never counts.
        return int((self.labels[1:] != IGNORE_INDEX).sum())


def load_rgb(path: Path, fixed_resolution: int | None):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        image = im.convert("RGB")
    if fixed_resolution:
        image = image.resize((fixed_resolution, fixed_resolution), Image.Resampling.BICUBIC)
    return image


def patches_per_image(image_sizes: torch.Tensor, num_images: int, grid_pinpoints, tile: int) -> list[int]:
    """How many tiles of each image the model will use: all AnyRes tiles (plus the base view) for a
    single-image sample, only the base view for each image of a multi-image sample."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    if num_images != 1:
        return [1] * num_images
    return [image_size_to_num_patches(image_size=s, grid_pinpoints=grid_pinpoints, patch_size=tile) for s in image_sizes]


def tile_size(processor) -> int:
    """The processor's tile side; its ``size`` is a dict when built, a SizeDict once loaded from disk."""
    size = processor.image_processor.size
    return int(size["height"] if isinstance(size, dict) else size.height)


class DataNotes:
    """Data problems met while drawing samples, said once. Every pass over the data meets the same bad samples
    again (a run of many passes repeated one warning per sample per pass, e.g. 143 lines for 7 samples): a
    sample's problem is logged the first time it is met, and each pass ends with one line counting them."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()
        self._counts: dict[str, int] = {}

    def first(self, where: str, kind: str) -> bool:
        """Count ``kind`` (a phrase such as "dropped: longer than the context length") once more in this pass;
        True only the first time ``where`` meets it, when the caller says it in full."""
        self._counts[kind] = self._counts.get(kind, 0) + 1
        if (where, kind) in self._said:
            return False
        self._said.add((where, kind))
        return True

    def end_pass(self, number: int) -> str | None:
        """The pass's one summary line (also logged), or None when it met no problem."""
        if not self._counts:
            return None
        line = f"pass {number} over the data: " + "; ".join(
            f"{n} sample{'s' if n != 1 else ''} {kind}" for kind, n in sorted(self._counts.items()))
        log.warning(line)
        self._counts = {}
        return line


def next_index(stream: "SampleStream", notes: DataNotes) -> int:
    """The stream's next sample index; a pass that ends here is summed up by ``notes``."""
    epoch = stream.epoch
    index = next(stream)
    if stream.epoch != epoch:
        notes.end_pass(epoch + 1)
    return index


DROPPED_OVERLONG = "dropped: longer than the context length"
TRUNCATED_OVERLONG = "truncated to the context length"
UNREADABLE_IMAGE = "skipped: unreadable image"


class ConversationEncoder:
    """Conversation -> EncodedSample (or None when skipped), with the processor of the model being trained."""

    def __init__(self, processor, context_length: int, overlong: str, budget: BadSampleBudget, fixed_resolution: int | None = None):
        self.processor = processor
        self.context_length = context_length
        self.overlong = overlong
        self.budget = budget
        self.fixed_resolution = fixed_resolution
        self.image_token_id = processor.tokenizer.convert_tokens_to_ids(model_spec.IMAGE_TOKEN)
        self.tile = tile_size(processor)
        self.dropped_overlong: list[str] = []  # each sample once, however many passes meet it
        self.truncated: list[str] = []
        self.notes = DataNotes()

    def messages_with_images(self, conversation: Conversation) -> list[dict[str, Any]] | None:
        images = []
        for path in conversation.images:
            try:
                images.append(load_rgb(path, self.fixed_resolution))
            except Exception as e:  # PIL raises many types for corrupt or truncated files
                if self.notes.first(conversation.where, UNREADABLE_IMAGE):  # one bad sample, counted once
                    self.budget.skip(conversation.where, f"cannot read image {path}: {type(e).__name__}: {e}")
                return None
        it = iter(images)
        messages = []
        for m in conversation.messages:
            content = [({"type": "image", "image": next(it)} if p["type"] == "image" else dict(p)) for p in m["content"]]
            messages.append({"role": m["role"], "content": content})
        return messages

    def encode(self, conversation: Conversation) -> EncodedSample | None:
        messages = self.messages_with_images(conversation)
        if messages is None:
            return None
        out = self.processor.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
        )
        input_ids = out["input_ids"][0]
        mask = out["assistant_masks"][0].bool()
        labels = torch.where(mask, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        if input_ids.numel() > self.context_length:
            kept = self._fit_context(conversation.where, input_ids, labels)
            if kept is None:
                return None
            input_ids, labels = kept
        pixel_values = image_sizes = None
        n = len(conversation.images)
        if n:
            image_sizes = out["image_sizes"]
            counts = patches_per_image(image_sizes.tolist(), n, self.processor.image_processor.image_grid_pinpoints, self.tile)
            # The processor pads every image to the largest tile count; keep the real tiles only, so
            # batches concatenate them (4-D pixel_values) without padding compute.
            pixel_values = torch.cat([out["pixel_values"][i, :c] for i, c in enumerate(counts)], dim=0)
        return EncodedSample(conversation.where, input_ids, labels, pixel_values, image_sizes, n)

    def _fit_context(self, where: str, input_ids: torch.Tensor, labels: torch.Tensor):
        n = input_ids.numel()
        if self.overlong == "truncate":
            image_positions = (input_ids == self.image_token_id).nonzero()
            last_image = int(image_positions.max()) if image_positions.numel() else -1
            cut_labels = labels[: self.context_length]
            if last_image < self.context_length and bool((cut_labels[1:] != IGNORE_INDEX).any()):
                if self.notes.first(where, TRUNCATED_OVERLONG):
                    log.info("%s: %d tokens truncated to the context length %d", where, n, self.context_length)
                    self.truncated.append(where)
                return input_ids[: self.context_length], cut_labels
        if self.notes.first(where, DROPPED_OVERLONG):
            log.warning("%s: %d tokens exceed the context length %d (dropped)", where, n, self.context_length)
            self.dropped_overlong.append(where)
        return None


# --- batching ------------------------------------------------------------------------------------


def collate(samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch for the model's forward (plus ``labels``)."""
    if not samples:
        raise ValueError("empty batch")
    length = max(s.input_ids.numel() for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        t = s.input_ids.numel()
        input_ids[i, :t] = s.input_ids
        labels[i, :t] = s.labels
        attention[i, :t] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    with_images = [s for s in samples if s.num_images]
    if with_images:
        batch["pixel_values"] = torch.cat([s.pixel_values for s in with_images], dim=0)
        batch["image_sizes"] = torch.cat([s.image_sizes for s in with_images], dim=0)
        batch["batch_num_images"] = torch.tensor([s.num_images for s in samples], dtype=torch.long)
    return batch


class SampleStream:
    """This rank's endless stream of sample indices: epoch ``e`` is a permutation seeded by
    ``seed + e``; rank ``r`` of ``w`` takes positions r, r+w, r+2w, ... of it. Across ranks a step's
    global batch is therefore the same set of samples whatever the world size, which is what lets a
    2-process run reproduce a 1-process run. The state (epoch, offset) is saved in checkpoints."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.offset = 0  # positions of this rank already consumed in the current epoch
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = torch.randperm(self.size, generator=g).tolist()[self.rank :: self.world_size]
        return self._order

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        order = self._epoch_order()
        while self.offset >= len(order):
            self.epoch += 1
            self.offset = 0
            self._order = None
            order = self._epoch_order()
        self.offset += 1
        return order[self.offset - 1]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            raise DataError(
                f"checkpoint was written by {state['world_size']} processes; resume with the same number "
                f"(this run has {self.world_size})"
            )
        self.epoch, self.offset, self._order = int(state["epoch"]), int(state["offset"]), None


class MicroBatches:
    """Draws encoded samples from a SampleStream, skipping bad ones, ``micro_batch_size`` at a time."""

    def __init__(self, conversations: Sequence[Conversation], encoder: ConversationEncoder, stream: SampleStream, micro_batch_size: int, pad_token_id: int):
        self.conversations = conversations
        self.encoder = encoder
        self.stream = stream
        self.micro_batch_size = micro_batch_size
        self.pad_token_id = pad_token_id

    def next_batch(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        samples: list[EncodedSample] = []
        misses = 0
        while len(samples) < self.micro_batch_size:
            conversation = self.conversations[next_index(self.stream, self.encoder.notes)]
            sample = self.encoder.encode(conversation)
            if sample is not None:
                samples.append(sample)
                misses = 0
                continue
            misses += 1
            if misses >= len(self.conversations):
                # A whole pass without one usable sample: looping on would hang the run.
                raise DataError(
                    f"no usable sample in {misses} consecutive samples (last: {conversation.where}); "
                    f"{len(self.encoder.dropped_overlong)} were longer than the context length "
                    f"{self.encoder.context_length}"
                )
        return collate(samples, self.pad_token_id), [s.where for s in samples]

    def state_dict(self) -> dict[str, int]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.load_state_dict(state)


class PrefetchingBatches:
    """Encodes the next micro-batches in a background thread while the model trains on the current one
    (image decoding, resizing and tokenising release the GIL for much of their time).

    Order and content are exactly those of the wrapped source: one producer thread draws batches in
    sequence. The resumable state is the wrapped stream's state *after the last batch handed out*, captured
    by the producer with each batch, so a checkpoint never skips the batches still in the queue. An error in
    the producer (e.g. the bad-sample budget exceeded) is raised from ``next_batch``."""

    def __init__(self, source: MicroBatches, depth: int = 2):
        import queue
        import threading

        self.source = source
        self.depth = max(1, depth)
        self._queue: "queue.Queue" = queue.Queue(maxsize=self.depth)
        self._state = source.state_dict()
        self._thread: "threading.Thread | None" = None
        self._stop = threading.Event()

    def _produce(self) -> None:
        while not self._stop.is_set():
            try:
                item = ("batch", self.source.next_batch(), self.source.state_dict())
            except BaseException as e:  # handed to the consumer, which raises it
                self._queue.put(("error", e, None))
                return
            self._queue.put(item)

    def next_batch(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        import threading

        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="batch-prefetch", daemon=True)
            self._thread.start()
        kind, payload, state = self._queue.get()
        if kind == "error":
            raise payload
        self._state = state
        return payload

    def state_dict(self) -> dict[str, int]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self._thread is not None:
            raise RuntimeError("load_state_dict after batches were drawn")
        self.source.load_state_dict(state)
        self._state = self.source.state_dict()

    def close(self) -> None:
        """Stop the producer (it may be blocked on a full queue: drain one slot so it sees the stop flag)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.1)
                except Exception:
                    pass
            self._thread = None
