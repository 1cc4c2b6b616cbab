"""Parameter groups, the stated 8-bit AdamW fallback, and the LR schedules."""

from __future__ import annotations

import math

import pytest

from training.optim import choose_optimizer, group_of
from training.scheduler import lr_multiplier


def test_parameter_names_map_to_groups():
    assert group_of("model.vision_tower.encoder.layers.0.mlp.fc1.weight") == "vision"
    assert group_of("model.multi_modal_projector.linear_1.weight") == "projector"
    assert group_of("model.image_newline") == "projector"
    assert group_of("model.language_model.embed_tokens.weight") == "language"
    assert group_of("lm_head.weight") == "language"


@pytest.mark.parametrize(
    ("sharded", "available", "chosen"),
    [
        (False, {"bitsandbytes", "torchao"}, "bitsandbytes.AdamW8bit"),
        (False, {"torchao"}, "torchao.AdamW8bit"),
        (True, {"bitsandbytes", "torchao"}, "torchao.AdamW8bit"),  # bnb cannot step FSDP2 DTensors
        (True, {"bitsandbytes"}, "torch.AdamW"),
        (False, set(), "torch.AdamW"),
    ],
)
def test_8bit_adamw_fallback_rule(sharded, available, chosen):
    choice = choose_optimizer("adamw8bit", sharded, available)
    assert choice.name == chosen
    if chosen == "torch.AdamW":
        assert "using 32-bit AdamW" in choice.reason
    assert choose_optimizer("adamw", sharded, available).name == "torch.AdamW"


def test_warmup_then_cosine_and_constant():
    # 10 steps, 2 of warm-up: 0.5, 1.0, then cosine from 1 down to 0 over steps 2..10.
    assert [lr_multiplier(s, 10, "cosine", 2) for s in (0, 1)] == [0.5, 1.0]
    assert lr_multiplier(2, 10, "cosine", 2) == 1.0
    assert lr_multiplier(6, 10, "cosine", 2) == pytest.approx(0.5)
    assert lr_multiplier(10, 10, "cosine", 2) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(6, 10, "cosine", 2, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert [lr_multiplier(s, 10, "constant", 0) for s in range(10)] == [1.0] * 10
