"""`varco-ocr ask` on the tiny random-weight model: real processor, real model code, real files."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from varco_ocr import ask
from varco_ocr.cli import app
from varco_ocr.engine import OCREngine
from varco_ocr.errors import InputError

pytestmark = pytest.mark.slow

FAST = ["--min-long-side", "384", "--max-grid", "2", "--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    torch.set_num_threads(1)
    return OCREngine(str(tiny_model_dir), max_new_tokens=8, min_long_side=384, max_grid=2)


@pytest.fixture()
def three_images(tmp_path):
    paths = []
    for i, size in enumerate([(300, 400), (500, 200), (384, 384)]):
        p = tmp_path / f"r{i}.png"
        Image.new("RGB", size, (255, 255 - 40 * i, 255)).save(p)
        paths.append(p)
    return paths


def model_visual_tokens(engine, inputs) -> int:
    """What the model code turns the pixels into: the number of feature vectors it will scatter into
    the image-token positions (transformers' own get_image_features, as tests/test_engine.py uses)."""
    with torch.inference_mode():
        feats = engine.model.model.get_image_features(
            pixel_values=inputs["pixel_values"],
            image_sizes=inputs["image_sizes"],
            batch_num_images=inputs["batch_num_images"],
            vision_aspect_ratio=engine.model.config.vision_aspect_ratio,
        )
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    return sum(f.shape[0] for f in (feats if isinstance(feats, (list, tuple)) else [feats]))


def error_lines(result) -> list[str]:
    # transformers' own weight-loading progress bar also goes to stderr; ours are the varco-ocr: lines
    return [line for line in result.stderr.splitlines() if line.startswith("varco-ocr:")]


def run_cli(*args, stdin=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


# -- pure parts ------------------------------------------------------------------------------------


def test_messages_put_every_image_then_the_question_in_one_user_turn():
    msgs = ask.build_messages(3, [], "Which total is highest?", system="Be brief.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert [c["type"] for c in msgs[1]["content"]] == ["image", "image", "image", "text"]
    assert msgs[1]["content"][-1]["text"] == "Which total is highest?"
    follow = ask.build_messages(2, [ask.Turn("q1", "a1")], "q2")
    assert [m["role"] for m in follow] == ["user", "assistant", "user"]
    assert [c["type"] for c in follow[2]["content"]] == ["text"]  # the pages are in the first turn only
    with pytest.raises(ask.AskError, match="empty"):
        ask.build_messages(1, [], "  ")


def test_context_error_counts_prompt_and_answer_budget():
    assert ask.context_error(1000, 577, 24, 1024) is None
    msg = ask.context_error(1000, 577, 25, 1024)
    assert msg and "1,000 tokens (577 of them visual)" in msg and "1,024" in msg and "--pages" in msg


def test_page_budget_is_checked_before_rendering(samples, tmp_path):
    with pytest.raises(ask.AskError, match=r"4 pages is over the budget of 3 images.*--pages"):
        ask.collect_pages([samples / "three-pages.pdf", samples / "receipt.png"], max_images=3)
    got = ask.collect_pages([samples / "receipt.png", samples / "three-pages.pdf"], dpi=72, max_images=4)
    assert [(Path(s.file).name, s.page) for s in got.sources] == [
        ("receipt.png", 1), ("three-pages.pdf", 1), ("three-pages.pdf", 2), ("three-pages.pdf", 3)]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError) as raised:
        ask.collect_pages([bad])
    assert str(raised.value) == f"{bad}: not an image file Pillow can read"  # the path once, not twice


def test_page_budget_advice_fits_what_was_given(samples):
    # --pages cannot help with separate images: say how many fit.
    assert ask.budget_error(13, 13, 0, 12) == (
        "13 separate images are over the budget of 12 images in one question; give at most 12 of them "
        "(--pages selects pages of PDFs and TIFFs only), or raise --max-images")
    # Beside separate images, the suggested --pages must itself fit (before: --pages 1-12 for 12 + 1 images).
    assert ask.budget_error(14, 10, 1, 12).endswith("(e.g. --pages 1-2 beside the 10 separate images) or raise --max-images")
    assert "--pages 1-6)" in ask.budget_error(30, 0, 2, 12)
    assert "leave no room" in ask.budget_error(15, 12, 3, 12)
    with pytest.raises(ask.AskError, match=r"^14 separate images are over the budget of 12"):
        ask.collect_pages([samples / "receipt.png"] * 14)


# -- the model -------------------------------------------------------------------------------------


def test_one_image_gets_full_anyres_tokens_as_the_model_expects(engine, samples):
    pages = ask.collect_pages([samples / "receipt.png"])
    asker = ask.LocalAsker(engine, pages)
    inputs, visual = asker.prepare("What is the total?", 8)
    assert inputs["pixel_values"].shape[1] > 1  # tiles beyond the base tile: AnyRes
    assert visual == model_visual_tokens(engine, inputs) > 577
    answer = asker.ask("What is the total?", max_new_tokens=8)
    assert 1 <= answer.answer_tokens <= 8
    # the answer is the model's own greedy continuation of exactly these inputs, decoded
    import torch

    with torch.inference_mode():
        out = engine.model.generate(**inputs, max_new_tokens=answer.answer_tokens, do_sample=False)
    expected = engine.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.text == expected.strip() or answer.text == expected
    assert answer.visual_tokens == visual and answer.prompt_tokens > visual


def test_three_images_get_one_base_tile_each(engine, three_images):
    asker = ask.LocalAsker(engine, ask.collect_pages(three_images))
    inputs, visual = asker.prepare("Which receipt has the highest total?", 8)
    assert inputs["batch_num_images"].tolist() == [3]
    # 24 x 24 patches of one 384 px tile + one newline token, per image (verified-facts)
    assert visual == model_visual_tokens(engine, inputs) == 3 * (576 + 1)
    assert asker.ask("Which receipt has the highest total?", max_new_tokens=8).answer_tokens >= 1


def test_streamed_text_equals_the_plain_answer(engine, three_images):
    pages = ask.collect_pages(three_images[:2])
    plain = ask.LocalAsker(engine, pages).ask("Total?", max_new_tokens=12)
    pieces: list[str] = []
    streamed = ask.LocalAsker(engine, pages).ask("Total?", max_new_tokens=12, on_text=pieces.append)
    assert "".join(pieces) == streamed.text == plain.text
    assert plain.text.strip() and len(pieces) >= 1  # an answer was read: not two empty strings compared


def test_follow_up_questions_keep_the_conversation(engine, three_images):
    asker = ask.LocalAsker(engine, ask.collect_pages(three_images[:1]), system="Answer briefly.")
    first = asker.ask("What is this?", max_new_tokens=6)
    second = asker.ask("And the date?", max_new_tokens=6)
    assert [t.question for t in asker.turns] == ["What is this?", "And the date?"]
    # The second prompt holds the first question and answer: longer, same pages, encoded once.
    assert second.prompt_tokens > first.prompt_tokens + first.answer_tokens
    assert second.visual_tokens == first.visual_tokens


# -- the command -----------------------------------------------------------------------------------


def test_cli_three_page_pdf_json_record(tiny_model_dir, samples):
    res = run_cli("ask", samples / "three-pages.pdf", "계약 기간은 언제부터 언제까지인가요?", "--json", "--dpi", "72",
                  "--model", tiny_model_dir, *FAST)
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert set(record) >= {"question", "answer", "sources", "model", "tokens"}
    assert record["question"] == "계약 기간은 언제부터 언제까지인가요?"
    assert [s["page"] for s in record["sources"]] == [1, 2, 3]
    assert record["model"] == str(tiny_model_dir)
    assert record["tokens"]["visual"] == 3 * 577 and record["tokens"]["answer"] >= 1
    plain = run_cli("ask", samples / "three-pages.pdf", "계약 기간은 언제부터 언제까지인가요?", "--dpi", "72",
                    "--model", tiny_model_dir, *FAST)
    assert plain.exit_code == 0 and record["answer"] + "\n" == plain.stdout  # the same answer as printed
    assert record["answer"].strip()  # not an empty answer on both sides


def test_cli_stream_prints_the_same_text(tiny_model_dir, three_images):
    args = ["ask", *three_images[:2], "Which is larger?", "--model", tiny_model_dir, *FAST]
    plain, streamed = run_cli(*args), run_cli(*args, "--stream")
    assert plain.exit_code == streamed.exit_code == 0, plain.output + streamed.output
    assert streamed.stdout == plain.stdout and plain.stdout.strip()


def test_cli_chat_reads_follow_ups_until_an_empty_line(tiny_model_dir, three_images):
    res = run_cli("ask", three_images[0], "--chat", "--json", "--model", tiny_model_dir, *FAST,
                  stdin="What is it?\nAnd the colour?\n\nnever asked\n")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["question"] for r in records] == ["What is it?", "And the colour?"]
    assert records[1]["tokens"]["prompt"] > records[0]["tokens"]["prompt"]


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--max-context", "1000"], 2, "over the model's context of 1,000 tokens"),
        (["--max-images", "2"], 2, "over the budget of 2 images"),
    ],
)
def test_cli_budget_errors(tiny_model_dir, samples, extra, code, message):
    res = run_cli("ask", samples / "three-pages.pdf", "Q?", "--dpi", "72", "--model", tiny_model_dir, *FAST, *extra)
    assert res.exit_code == code
    assert message in res.stderr and "Traceback" not in res.output and len(error_lines(res)) == 1


def test_cli_bad_inputs_are_one_line_errors(tiny_model_dir, tmp_path, three_images):
    missing = run_cli("ask", tmp_path / "nothere.png", "Q?", "--model", tiny_model_dir)
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    empty = run_cli("ask", three_images[0], "   ", "--model", tiny_model_dir)
    assert empty.exit_code == 2 and "question is empty" in empty.stderr
    not_a_model = run_cli("ask", three_images[0], "Q?", "--model", tmp_path)
    assert not_a_model.exit_code == 2 and "cannot load model" in not_a_model.stderr
    for res in (missing, empty, not_a_model):
        assert len(error_lines(res)) == 1 and "Traceback" not in res.output, res.stderr


def test_cli_forgotten_question_is_named(tmp_path, three_images):
    # Before: "give at least one image, PDF or TIFF before the question" (the file was taken for the question).
    for args in ([three_images[0]], three_images[:2]):
        res = run_cli("ask", *args, "--model", tmp_path / "never-loaded")
        assert res.exit_code == 2
        assert error_lines(res) == [
            f"varco-ocr: the question is missing: the last argument, {args[-1]}, is a file; put the question after "
            f"the files, e.g. varco-ocr ask {args[-1]} \"What is the total?\""]


def test_cli_model_whose_template_drops_images_is_refused(tiny_model_dir, tmp_path, three_images):
    import shutil

    broken = tmp_path / "text-only-template"
    shutil.copytree(tiny_model_dir, broken)
    # A chat template that renders only text: the model would never see the pages.
    template = ("{%- for m in messages -%}<|im_start|>{{ m['role'] }}\n{%- for p in m['content'] -%}"
                "{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}{%- endfor -%}<|im_end|>\n{%- endfor -%}"
                "<|im_start|>assistant\n")
    for name in ("chat_template.jinja",):
        (broken / name).write_text(template, encoding="utf-8")
    res = run_cli("ask", *three_images[:2], "Q?", "--model", broken, *FAST)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(error_lines(res)) == 1 and "places no image" in error_lines(res)[0]
