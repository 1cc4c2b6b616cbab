"""Stage recipes carry Table 2; overrides are typed and unknown keys are errors."""

from __future__ import annotations

import pytest

from training.params import ConfigError, load_config, parse_set_options, recipe_path

# (context, lr, vision lr, schedule, max grid, max visual tokens, trainable) per stage, from the issue's
# transcription of the paper's Table 2.
TABLE_2 = {
    # Stage 1: 2048, not the paper's 1024: see the comment in the recipe (one image takes 1,176 tokens in HF's model).
    1: (2048, 1e-3, None, "cosine", 1, 576, "projector"),
    2: (16384, 1e-5, 2e-6, "cosine", 2, 5 * 576, "all"),
    3: (16384, 1e-5, 2e-6, "cosine", 6, 10 * 576, "all"),
}


@pytest.mark.parametrize("size", ["1.7b", "14b"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_recipes_carry_table_2(size, stage):
    c = load_config(recipe_path(size, stage))
    context, lr, vision_lr, schedule, grid, tokens, trainable = TABLE_2[stage]
    assert (c.stage, c.context_length, c.lr, c.vision_lr, c.schedule) == (stage, context, lr, vision_lr, schedule)
    assert (c.max_grid, c.max_visual_tokens, c.trainable, c.global_batch_size) == (grid, tokens, trainable, 128)
    assert c.anyres == "anyres_max_9"
    assert (c.fixed_resolution == 384) == (stage == 1)


@pytest.mark.parametrize(("size", "lr"), [("14b", 3e-7), ("1.7b", 6e-7)])
def test_stage_4_is_constant_lr_9216_context(size, lr):
    c = load_config(recipe_path(size, 4))
    assert (c.lr, c.schedule, c.context_length, c.trainable, c.max_grid) == (lr, "constant", 9216, "all", 6)


def test_overrides_are_typed_and_win_over_the_file():
    c = load_config(recipe_path("1.7b", 2), parse_set_options(["lr=3e-4", "max_steps=5", "betas=0.9,0.95", "fsdp=false"]))
    assert (c.lr, c.max_steps, c.betas, c.fsdp) == (3e-4, 5, (0.9, 0.95), False)
    assert load_config(None, {"vision_lr": "none"}).vision_lr is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": "1"}, "unknown setting 'learning_rate'"),
        ({"max_steps": "ten"}, "max_steps"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"max_steps": "0"}, "max_steps must be at least 1"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="x.yaml: invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_accumulation_reaches_the_global_batch():
    c = load_config(None, {"global_batch_size": 128, "micro_batch_size": 2})
    assert c.accumulation_steps(world_size=8) == 8
    with pytest.raises(ConfigError, match="not a multiple"):
        c.accumulation_steps(world_size=3)
