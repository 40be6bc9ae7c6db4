"""The tiny offline models: tokenizer round trips, chat template, save/reload, LLaVA."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from trainer_worker.training.tiny import (
    build_causal_lm,
    build_tiny_lm,
    build_tiny_vlm,
    default_corpus,
    train_tokenizer,
)

SAMPLE = "<|im_start|>user\nWhat is 12 + 7?\n\n  Twice.<|im_end|>\n<think>\n1. Add.\n</think>\nÉtape 19"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm", hidden_size=32, layers=1, heads=2)


def test_newlines_and_tags_survive_encode_decode() -> None:
    tok = train_tokenizer(default_corpus(80), vocab_size=300)
    ids = tok.encode(SAMPLE, add_special_tokens=False)
    assert tok.decode(ids) == SAMPLE
    # Streaming decodes with skip_special_tokens: chat tokens go, think tags stay.
    text = tok.decode(ids, skip_special_tokens=True)
    assert "<|im_" not in text
    assert "<think>\n1. Add.\n</think>" in text
    assert tok.convert_tokens_to_ids("<think>") in ids
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>"


def test_ids_survive_save_and_reload(tiny_lm: Path) -> None:
    original = train_tokenizer(default_corpus(), vocab_size=512)
    reloaded = AutoTokenizer.from_pretrained(tiny_lm)
    ids = original.encode(SAMPLE, add_special_tokens=False)
    assert reloaded.encode(SAMPLE, add_special_tokens=False) == ids
    assert reloaded.chat_template == original.chat_template
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    assert model.config.eos_token_id == reloaded.eos_token_id
    assert model.generation_config.pad_token_id == reloaded.pad_token_id
    assert model.config.vocab_size == len(reloaded)


def test_chat_template_continues_final_message_without_closing_turn(tiny_lm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    prefix = "<think>\nFirst, add 2 and 2.\n"
    msgs = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": prefix}]
    text = tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
    assert text == f"<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n{prefix}"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert text.startswith(prompt)


def test_chat_template_marks_assistant_tokens_and_takes_content_parts(tiny_lm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    ]
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    # Exactly the assistant's content plus its end-of-turn token is trained on.
    assert tok.decode(marked) == "Red.<|im_end|>\n"
    assert "<image>Colour?" in tok.decode(out["input_ids"])


def test_build_causal_lm_is_deterministic_for_a_seed() -> None:
    tok = train_tokenizer(default_corpus(50), vocab_size=300)
    a = build_causal_lm(tok, hidden_size=32, layers=1, heads=2, seed=3)
    b = build_causal_lm(tok, hidden_size=32, layers=1, heads=2, seed=3)
    ids = torch.tensor([tok.encode("What is 2 + 2?")])
    assert torch.equal(a(ids).logits, b(ids).logits)


def test_tiny_vlm_reloads_offline_and_generates_from_an_image(tmp_path: Path) -> None:
    path = build_tiny_vlm(tmp_path / "vlm")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (0, 128, 255)).save(buf, format="PNG")
    image = Image.open(io.BytesIO(buf.getvalue()))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    # 32x32 with patch 8 -> 16 patches; the image placeholder is expanded to that many tokens.
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
    assert new_tokens == 4 or int(out[0, -1]) == processor.tokenizer.eos_token_id
