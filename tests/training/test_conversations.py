"""Conversation JSON-lines: validation with file:line errors, assistant-only loss masks with the end of turn,
multi-image encoding, overlong rules, the skip budget, and the rank-sharded sample stream."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from training.data import (
    IGNORE_INDEX,
    BadSampleBudget,
    ConversationEncoder,
    DataError,
    SampleStream,
    collate,
    parse_record,
    read_conversations,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def processor(composed_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(composed_dir)


def _write_images(folder, names, size=(64, 40)):
    for n in names:
        Image.new("RGB", size, "white").save(folder / n)


def _jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    return path


def _turns(*pairs):
    out = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


def test_labels_are_exactly_the_answers_with_their_end_of_turn(processor, tmp_path):
    _write_images(tmp_path, ["a.png"])
    conv = parse_record({"image": "a.png", "conversations": _turns(("<image>\n<ocr>", "<char>합계</char><bbox>0.1, 0.2, 0.3, 0.4</bbox>"), ("more?", "no"))}, tmp_path, "x:1")
    sample = ConversationEncoder(processor, 4096, "drop", BadSampleBudget()).encode(conv)
    tok = processor.tokenizer
    learned = sample.input_ids[sample.labels != IGNORE_INDEX]
    assert tok.decode(learned) == "<char>합계</char><bbox>0.1, 0.2, 0.3, 0.4</bbox><|im_end|>no<|im_end|>"
    # The template's newline after <|im_end|> and everything of the user turns are not learned.
    text = tok.decode(sample.input_ids)
    assert text.count("<|im_end|>") == 5  # system, user, assistant, user, assistant
    assert (sample.input_ids == processor.image_token_id).sum() > 0
    assert sample.labels[sample.input_ids == processor.image_token_id].eq(IGNORE_INDEX).all()


def test_placeholders_and_images_must_agree_and_turns_alternate(tmp_path):
    with pytest.raises(DataError, match=r"^f.jsonl:3: 2 <image> placeholders for 1 images"):
        parse_record({"images": ["a.png"], "conversations": _turns(("<image><image>hi", "x"))}, tmp_path, "f.jsonl:3")
    with pytest.raises(DataError, match="alternate"):
        parse_record({"conversations": [{"from": "gpt", "value": "x"}]}, tmp_path, "f:1")
    with pytest.raises(DataError, match="unknown role"):
        parse_record({"conversations": [{"from": "bot", "value": "x"}]}, tmp_path, "f:1")
    # No placeholder: the images go first in the first user turn.
    conv = parse_record({"images": ["a.png", "b.png"], "conversations": _turns(("compare", "same"))}, tmp_path, "f:1")
    assert [p["type"] for p in conv.messages[0]["content"]] == ["image", "image", "text"]


def test_bad_lines_missing_and_corrupt_images_are_skipped_with_file_and_line(processor, tmp_path, caplog):
    _write_images(tmp_path, ["ok.png"])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    data = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"image": "ok.png", "conversations": _turns(("<image>\nq", "a"))},
            "{not json",
            {"image": "gone.png", "conversations": _turns(("<image>\nq", "a"))},
            {"image": "corrupt.png", "conversations": _turns(("<image>\nq", "a"))},
        ],
    )
    budget = BadSampleBudget(max_count=5, max_fraction=1.0)
    convs = read_conversations([data], budget)
    assert [c.where for c in convs] == [f"{data}:1", f"{data}:4"]
    assert budget.skipped[0].startswith(f"{data}:2: invalid JSON")
    assert budget.skipped[1].startswith(f"{data}:3: image not found:")
    encoder = ConversationEncoder(processor, 4096, "drop", budget)
    assert encoder.encode(convs[1]) is None
    assert budget.skipped[2].startswith(f"{data}:4: cannot read image")
    # Beyond the budget the run stops, naming the last bad sample.
    with pytest.raises(DataError, match=r"too many bad samples: 2 skipped of 3 read .*d\.jsonl:3: image not found"):
        read_conversations([data], BadSampleBudget(max_count=1, max_fraction=1.0))
    with pytest.raises(DataError, match="too many bad samples"):
        read_conversations([data], BadSampleBudget(max_count=100, max_fraction=0.25))


def test_multi_image_sample_gets_base_tiles_and_batch_num_images(processor, tmp_path):
    _write_images(tmp_path, ["a.png", "b.png", "c.png"])
    multi = parse_record({"images": ["a.png", "b.png"], "conversations": _turns(("<image>\n<image>\nsame?", "yes"))}, tmp_path, "m:1")
    single = parse_record({"images": ["c.png"], "conversations": _turns(("<image>\n<ocr>", "x"))}, tmp_path, "s:1")
    enc = ConversationEncoder(processor, 8192, "drop", BadSampleBudget())
    m, s = enc.encode(multi), enc.encode(single)
    tiles = processor.num_image_tokens  # 576 for 384 px tiles of patch 16
    assert int((m.input_ids == processor.image_token_id).sum()) == 2 * (tiles + 1)
    assert m.pixel_values.shape[0] == 2  # one base tile per image
    assert s.pixel_values.shape[0] == 2  # base view + the 1x1 grid's tile
    batch = collate([m, s], processor.tokenizer.pad_token_id)
    assert batch["batch_num_images"].tolist() == [2, 1]
    assert batch["pixel_values"].shape[0] == 4 and batch["image_sizes"].shape == (3, 2)
    assert batch["attention_mask"][1].sum() == s.input_ids.numel()  # right padding
    assert (batch["labels"][1, s.input_ids.numel():] == IGNORE_INDEX).all()


def test_overlong_samples_are_dropped_or_truncated_by_the_stated_rule(processor, tmp_path):
    _write_images(tmp_path, ["a.png"])
    long_answer = " ".join(["TOTAL"] * 200)
    conv = parse_record({"image": "a.png", "conversations": _turns(("<image>\n<ocr>", long_answer))}, tmp_path, "l:1")
    full = ConversationEncoder(processor, 100_000, "drop", BadSampleBudget()).encode(conv)
    n_image = int((full.input_ids == processor.image_token_id).sum())
    limit = full.input_ids.numel() - 50  # cuts the answer, keeps the image

    dropping = ConversationEncoder(processor, limit, "drop", BadSampleBudget())
    assert dropping.encode(conv) is None and dropping.dropped_overlong == ["l:1"]

    truncating = ConversationEncoder(processor, limit, "truncate", BadSampleBudget())
    cut = truncating.encode(conv)
    assert cut.input_ids.numel() == limit and torch.equal(cut.input_ids, full.input_ids[:limit])
    # The last 50 tokens are 49 answer tokens (with <|im_end|>) and the template's newline, never learned.
    assert int((full.labels[limit:] != IGNORE_INDEX).sum()) == 49
    assert cut.num_target_tokens == full.num_target_tokens - 49 and truncating.truncated == ["l:1"]

    # A context that would cut into the image's tokens drops the sample even in truncate mode.
    into_image = ConversationEncoder(processor, n_image // 2, "truncate", BadSampleBudget())
    assert into_image.encode(conv) is None and into_image.dropped_overlong == ["l:1"]


def test_repeated_data_warnings_are_said_once_and_counted_per_pass(processor, tmp_path, caplog):
    import logging

    from training.data import MicroBatches

    _write_images(tmp_path, ["a.png"])
    short = parse_record({"image": "a.png", "conversations": _turns(("<image>\n<ocr>", "TOTAL"))}, tmp_path, "l:1")
    long = parse_record({"image": "a.png", "conversations": _turns(("<image>\n<ocr>", " ".join(["TOTAL"] * 200)))},
                        tmp_path, "l:2")
    limit = ConversationEncoder(processor, 100_000, "drop", BadSampleBudget()).encode(short).input_ids.numel() + 10
    encoder = ConversationEncoder(processor, limit, "drop", BadSampleBudget())
    batches = MicroBatches([short, short, long], encoder, SampleStream(3, seed=0), 1, processor.tokenizer.pad_token_id)
    with caplog.at_level(logging.INFO, logger="training.data"):
        for _ in range(10):  # five passes of two usable samples: the long one is met in passes 1-5
            batches.next_batch()
    messages = [r.getMessage() for r in caplog.records]
    # Before: one "exceed the context length" line per pass (143 lines for 7 samples in a long run).
    assert sum("exceed the context length" in m for m in messages) == 1 and encoder.dropped_overlong == ["l:2"]
    passes = [m for m in messages if m.startswith("pass ")]
    assert passes[:4] == [f"pass {n} over the data: 1 sample dropped: longer than the context length" for n in range(1, 5)]


def test_rank_streams_partition_each_global_batch_and_resume():
    single = SampleStream(10, seed=3)
    first_eight = [next(single) for _ in range(8)]
    r0, r1 = SampleStream(10, seed=3, rank=0, world_size=2), SampleStream(10, seed=3, rank=1, world_size=2)
    assert sorted([next(r0) for _ in range(4)] + [next(r1) for _ in range(4)]) == sorted(first_eight)
    # Epochs roll over with a new permutation covering every sample once.
    epoch = [next(single) for _ in range(2)] + [next(single) for _ in range(10)]
    assert sorted(first_eight + epoch[:2]) == list(range(10)) and sorted(epoch[2:]) == list(range(10))
    resumed = SampleStream(10, seed=3)
    resumed.load_state_dict(single.state_dict())
    assert [next(resumed) for _ in range(5)] == [next(single) for _ in range(5)]
    with pytest.raises(DataError, match="same number"):
        SampleStream(10, 3, 0, 1).load_state_dict(r0.state_dict())


def test_prefetching_gives_the_same_batches_and_a_resumable_state(processor, tmp_path):
    from training.data import MicroBatches, PrefetchingBatches

    _write_images(tmp_path, [f"p{i}.png" for i in range(5)])
    data = _jsonl(tmp_path / "d.jsonl", [{"image": f"p{i}.png", "conversations": _turns(("<image>\n<ocr>", f"word{i}"))} for i in range(5)])
    convs = read_conversations([data], BadSampleBudget())

    def source():
        enc = ConversationEncoder(processor, 8192, "drop", BadSampleBudget())
        return MicroBatches(convs, enc, SampleStream(len(convs), seed=1), 2, processor.tokenizer.pad_token_id)

    plain = source()
    expected = [plain.next_batch()[1] for _ in range(4)]
    ahead = PrefetchingBatches(source(), depth=3)
    got = [ahead.next_batch()[1] for _ in range(2)]
    state = ahead.state_dict()  # after 2 batches, although the producer is further ahead
    ahead.close()
    assert got == expected[:2]
    resumed = PrefetchingBatches(source(), depth=2)
    resumed.load_state_dict(state)
    assert [resumed.next_batch()[1] for _ in range(2)] == expected[2:]
    resumed.close()


def test_prefetch_errors_surface_in_the_training_thread(processor, tmp_path):
    from training.data import MicroBatches, PrefetchingBatches

    (tmp_path / "bad.png").write_bytes(b"not an image")
    _write_images(tmp_path, ["ok.png"])
    data = _jsonl(tmp_path / "d.jsonl", [{"image": n, "conversations": _turns(("<image>\nq", "a"))} for n in ("bad.png", "ok.png")])
    budget = BadSampleBudget(max_count=0, max_fraction=1.0)
    convs = read_conversations([data], budget)
    enc = ConversationEncoder(processor, 8192, "drop", budget)
    batches = PrefetchingBatches(MicroBatches(convs, enc, SampleStream(2, seed=0), 2, processor.tokenizer.pad_token_id))
    with pytest.raises(DataError, match="too many bad samples.*bad.png"):
        batches.next_batch()


def test_unreadable_files_and_files_without_usable_samples_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"missing\.jsonl: cannot open data file"):
        read_conversations([tmp_path / "missing.jsonl"], BadSampleBudget())
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"conversations": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.jsonl: not UTF-8 text"):
        read_conversations([latin1], BadSampleBudget())
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no usable samples in .*blank\.jsonl"):
        read_conversations([blank], BadSampleBudget())
