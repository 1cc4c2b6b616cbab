"""`compose_model`: weights come from the right sources, tokens are added, the tower is cut at the
penultimate layer, and the folder loads and runs through the real processor."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from varco_ocr import model_spec
from training.compose import ComposeError, compose_model, embedding_rows_needed

torch.set_num_threads(1)


def _load(path):
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionForConditionalGeneration.from_pretrained(path), AutoProcessor.from_pretrained(path)


def test_embedding_rows_grow_padded_and_never_shrink():
    assert embedding_rows_needed(151_936, 151_679) == 151_936  # Qwen3: spare rows already there
    assert embedding_rows_needed(600, 610) == 640
    assert embedding_rows_needed(600, 600) == 600


def test_composed_weights_come_from_their_sources(tiny_parts, composed_dir):
    from transformers import Qwen3ForCausalLM, SiglipVisionModel

    llm_dir, vision_dir = tiny_parts
    model, processor = _load(composed_dir)
    llm = Qwen3ForCausalLM.from_pretrained(llm_dir)
    tower = SiglipVisionModel.from_pretrained(vision_dir)

    # Language model: every tensor identical, the embedding's old rows kept.
    for name, tensor in llm.model.state_dict().items():
        if name == "embed_tokens.weight":
            continue
        assert torch.equal(model.model.language_model.state_dict()[name], tensor), name
    old_rows = llm.model.embed_tokens.weight.shape[0]
    assert torch.equal(model.get_input_embeddings().weight[:old_rows], llm.model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight[:old_rows], llm.lm_head.weight)

    # Vision: the last layer is dropped (penultimate features), the others copied.
    assert model.config.vision_config.num_hidden_layers == tower.config.num_hidden_layers - 1
    assert model.config.vision_feature_layer == -1 and model.config.vision_feature_select_strategy == "full"
    ours = model.model.vision_tower.state_dict()
    for name, tensor in tower.state_dict().items():
        if f"encoder.layers.{tower.config.num_hidden_layers - 1}." in name or "head" in name:
            assert name not in ours
        else:
            assert torch.equal(ours[name], tensor), name

    # Tokens: every VARCO tag is one special token, the embedding holds them all.
    tok = processor.tokenizer
    for t in model_spec.SPECIAL_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] < model.get_input_embeddings().weight.shape[0], t
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert tok.eos_token == model_spec.IM_END
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    assert model.get_input_embeddings().weight.shape[0] > old_rows

    # Resolution settings agree in processor and model; the chat template is VARCO's.
    assert processor.image_processor.image_grid_pinpoints == [[384, 384]] == model.config.image_grid_pinpoints
    assert processor.chat_template == model_spec.CHAT_TEMPLATE
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]


def test_features_equal_the_source_towers_penultimate_layer(tiny_parts, composed_dir):
    from transformers import SiglipVisionModel

    model, processor = _load(composed_dir)
    tower = SiglipVisionModel.from_pretrained(tiny_parts[1])
    pixels = torch.randn(1, 3, 384, 384)
    ours = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
    theirs = tower(pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_composed_model_runs_a_chat_turn(composed_dir):
    model, processor = _load(composed_dir)
    conv = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 48), "white")}, {"type": "text", "text": "<ocr>"}]}]
    inputs = processor.apply_chat_template(conv, tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3 or out[0, -1].item() in model.generation_config.eos_token_id


def test_vision_from_copies_tower_and_optionally_projector(tiny_parts, composed_dir, tmp_path):
    llm_dir, vision_dir = tiny_parts
    source, _ = _load(composed_dir)
    with torch.no_grad():  # make the source's tower and projector distinguishable from a fresh compose
        for p in source.parameters():
            p.add_(0.5)
    src_dir = tmp_path / "trained"
    source.save_pretrained(src_dir)

    compose_model(str(llm_dir), None, tmp_path / "a", vision_from=str(src_dir), max_grid=1, seed=7)
    a, _ = _load(tmp_path / "a")
    for name, tensor in source.model.vision_tower.state_dict().items():
        assert torch.equal(a.model.vision_tower.state_dict()[name], tensor), name
    assert not torch.equal(a.model.multi_modal_projector.linear_1.weight, source.model.multi_modal_projector.linear_1.weight)

    compose_model(str(llm_dir), str(vision_dir), tmp_path / "b", vision_from=str(src_dir), vision_from_projector=True, max_grid=1)
    b, _ = _load(tmp_path / "b")
    assert torch.equal(b.model.multi_modal_projector.linear_1.weight, source.model.multi_modal_projector.linear_1.weight)
    assert torch.equal(b.model.image_newline, source.model.image_newline)


def test_vision_from_with_other_shapes_names_the_tensor(tiny_parts, tmp_path):
    from transformers import SiglipVisionModel

    llm_dir, vision_dir = tiny_parts
    wide = SiglipVisionModel.from_pretrained(vision_dir)
    config = wide.config
    config.hidden_size, config.intermediate_size = 48, 96
    other_dir = tmp_path / "other"
    compose_src = tmp_path / "other-vision"
    SiglipVisionModel(config).save_pretrained(compose_src)
    compose_model(str(llm_dir), str(compose_src), other_dir, max_grid=1)
    with pytest.raises(ComposeError, match=r"model\.vision_tower\..* has shape"):
        compose_model(str(llm_dir), str(vision_dir), tmp_path / "c", vision_from=str(other_dir), max_grid=1)


def test_non_siglip_vision_is_refused(tiny_parts):
    llm_dir, _ = tiny_parts
    with pytest.raises(ComposeError, match="SigLIP"):
        compose_model(str(llm_dir), str(llm_dir), "/nonexistent/out")
