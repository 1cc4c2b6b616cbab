"""One settings object (issue 15 item 5): ``varco_ocr.settings.EngineSettings`` / ``ServerSettings`` are built
once from the command line and reach the local engine, the server backend and the resume fingerprint."""

import dataclasses
import json
import os
import pickle

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from varco_ocr.settings import EngineSettings, ServerSettings

# Every field with a value unlike its default, so each check below can tell "passed on" from "defaulted".
NON_DEFAULT = dict(model="set-by-the-test", device="cpu", dtype="fp16", max_new_tokens=77, min_long_side=500,
                   max_grid=2, max_pixels=12_345_678, keep_raw=True, split_truncated=True)


def non_default(**changes) -> EngineSettings:
    s = EngineSettings(**{**NON_DEFAULT, **changes})
    for f in dataclasses.fields(s):  # a field added later needs a value here too
        assert getattr(s, f.name) != f.default, f"NON_DEFAULT lacks a non-default value for {f.name}"
    return s


@hsettings(max_examples=60, deadline=None)
@given(st.builds(EngineSettings, model=st.text(max_size=40), device=st.sampled_from(["auto", "cpu", "cuda:1", "mps"]),
                 dtype=st.sampled_from(["auto", "bf16", "fp16", "fp32"]), max_new_tokens=st.integers(1, 1 << 16),
                 min_long_side=st.integers(0, 10_000), max_grid=st.integers(1, 12),
                 max_pixels=st.none() | st.integers(1, 1 << 40), keep_raw=st.booleans(), split_truncated=st.booleans()),
       st.builds(ServerSettings, urls=st.lists(st.text(max_size=30), max_size=3).map(tuple),
                 concurrency=st.integers(1, 256), timeout=st.floats(0.1, 1e4), model_given=st.booleans()))
def test_settings_survive_pickling(engine, server):
    # Workers in other processes (Ray actors, spawned renderers) get them pickled.
    assert pickle.loads(pickle.dumps(engine)) == engine
    assert pickle.loads(pickle.dumps(server)) == server
    assert json.loads(json.dumps(engine.fingerprint())) == engine.fingerprint()  # it is hashed as JSON


def test_every_field_is_an_option_of_the_ocr_command_under_its_own_name():
    """A field reaches the command line's settings only through an option of the same name
    (EngineSettings.from_options): one missing from `ocr` would silently stay at its default."""
    import typer

    from varco_ocr.cli import app

    command = typer.main.get_command(app).commands["ocr"]
    assert {f.name for f in dataclasses.fields(EngineSettings)} <= {p.name for p in command.params}
    # and the flags land in the fields: every non-default value given on the command line comes back
    s = non_default()
    args = ["page.png", "--model", s.model, "--device", s.device, "--dtype", s.dtype, "--max-new-tokens", str(s.max_new_tokens),
            "--min-long-side", str(s.min_long_side), "--max-grid", str(s.max_grid), "--max-pixels", str(s.max_pixels),
            "--keep-raw", "--split-truncated"]
    with command.make_context("ocr", args) as ctx:
        assert EngineSettings.from_options(ctx.params) == s
    with command.make_context("ocr", ["page.png", "--max-pixels", "0"]) as ctx:  # 0: no limit
        assert EngineSettings.from_options(ctx.params) == EngineSettings(max_pixels=None)
    with command.make_context("ocr", ["page.png"]) as ctx:  # the command's defaults are the dataclass's
        assert EngineSettings.from_options(ctx.params) == EngineSettings()


def test_fingerprint_of_todays_options_is_unchanged(tmp_path):
    """Output folders written before EngineSettings resume without redoing everything: the run log's
    fingerprints are byte-identical to those of the release before it. The pinned values were computed
    with that code (main at 06fdda3: `varco-ocr ocr FILE -o OUT` with the options below, fingerprint of
    these very bytes and mtime), before this change."""
    from typer.testing import CliRunner

    from varco_ocr.cli import app

    pinned = {
        (): {"doc.pdf": "0c22e0515a26172b", "page.png": "fac19ea08bad0f95"},
        ("--keep-raw", "--split-truncated", "--max-new-tokens", "77", "--min-long-side", "500", "--max-grid", "3",
         "--max-pixels", "0", "--device", "cpu", "--dtype", "fp16"): {"doc.pdf": "b6ff0f93b316c170", "page.png": "c3bbd91dd6d62be7"},
    }
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("doc.pdf", "page.png"):
        path = folder / name
        path.write_bytes(b"0123456789" * 7)  # neither opens: each document fails, with its fingerprint logged
        os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    for n, (extra, expected) in enumerate(pinned.items()):
        out = tmp_path / f"out{n}"
        res = CliRunner().invoke(app, ["ocr", str(folder / "doc.pdf"), str(folder / "page.png"), "-o", str(out), *extra])
        assert res.exit_code == 1, res.output  # both failed, the model never loaded
        records = [json.loads(line) for line in (out / "varco-ocr.log.jsonl").read_text(encoding="utf-8").splitlines()]
        got = {os.path.basename(r["source"]): r["fingerprint"] for r in records if "fingerprint" in r}
        assert got == expected


def test_the_fingerprint_records_what_changes_the_words_read():
    base = EngineSettings()
    assert base.fingerprint() == {"max_new_tokens": 8192, "min_long_side": 2304, "max_grid": 6, "keep_raw": False}
    for name, value in NON_DEFAULT.items():
        changed = dataclasses.replace(base, **{name: value}).fingerprint()
        if name in ("model", "device", "dtype", "max_pixels"):
            # model: recorded by BatchOptions.model (a server's is known only once reached); device, dtype:
            # the same words up to rounding; max_pixels: refuses, never reads differently
            assert changed == base.fingerprint(), name
        else:
            assert changed == {**base.fingerprint(), name: value}, name


@pytest.mark.slow
def test_every_field_reaches_the_local_engine(tiny_model_dir):
    import torch

    from varco_ocr.engine import OCREngine

    s = non_default(model=str(tiny_model_dir))
    engine = OCREngine.from_settings(s, prefetch=False)
    pins = engine.processor.image_processor.image_grid_pinpoints
    assert [list(p) for p in pins] == [list(p) for p in engine.model.config.image_grid_pinpoints]
    reached = {
        "model": engine.model_name,
        "device": engine.device,
        "dtype": {torch.float16: "fp16"}.get(engine.model.dtype, str(engine.model.dtype)),
        # the grid set on the processor and the model config (N x N tiles), not only remembered
        "max_grid": max(w for w, _ in pins) // min(w for w, _ in pins),
    }
    for f in dataclasses.fields(s):
        got = reached[f.name] if f.name in reached else getattr(engine, f.name)
        assert got == getattr(s, f.name), f.name
    assert engine.max_grid == s.max_grid
    # keyword use stays as it was for library users
    assert OCREngine(str(tiny_model_dir), max_new_tokens=5, prefetch=False).max_new_tokens == 5


def test_every_field_reaches_the_server_backend(fake_servers):
    from varco_ocr.server import ServerBackend

    a, b = fake_servers(), fake_servers()
    s = non_default()
    server = ServerSettings(urls=(a.url, b.url.removesuffix("/v1")), concurrency=3, timeout=12.5, model_given=True)
    backend = ServerBackend.from_settings(s, server)
    try:
        for f in dataclasses.fields(s):
            if f.name in ServerBackend.SERVER_DECIDES:
                continue
            got = backend.model_name if f.name == "model" else getattr(backend, f.name)
            assert got == getattr(s, f.name), f.name
        assert ServerBackend.SERVER_DECIDES <= {f.name for f in dataclasses.fields(s)}
        assert [x.url for x in backend.servers] == [a.url, b.url]
        assert (backend.concurrency, backend.timeout) == (3, 12.5)
        by_keywords = ServerBackend([a.url], model="m", max_new_tokens=77)  # keyword use, as before
        assert backend.max_body_bytes == by_keywords.max_body_bytes
        by_keywords.close()
    finally:
        backend.close()
    discovered = ServerBackend.from_settings(s, dataclasses.replace(server, model_given=False))
    try:
        assert discovered.model_name == a.models[0] != s.model  # not named: asked from /v1/models
    finally:
        discovered.close()
