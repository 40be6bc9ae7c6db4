"""Tiny models built offline, for tests, demos and benchmarks (no hub download anywhere).

* ``train_tokenizer``: a byte-level BPE tokenizer trained on a handful of lines, with ChatML special
  tokens and a chat template that carries ``{% generation %}`` markers (TRL's ``assistant_only_loss``).
* ``build_causal_lm``: a randomly initialised Llama (Llama rather than Qwen2, because ``AutoTokenizer``
  rebuilds a Qwen2 tokenizer from scratch on reload and silently changes the ids).
* ``build_tiny_lm`` / ``build_tiny_vlm``: both of the above saved to a folder that
  ``AutoTokenizer`` / ``AutoModelForCausalLM`` (or ``AutoProcessor`` /
  ``AutoModelForImageTextToText``) reload offline.

Random weights produce junk text; these models exist to exercise the plumbing, not to be right.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
IMAGE_TOKEN = "<image>"

# ChatML with generation markers. Written with explicit '\n' strings and whitespace control so the
# rendering is exact: continue_final_message (transformers and vLLM) cuts the rendered text right
# after the final message's content, which only works when content is rendered verbatim.
# Image parts render as the image placeholder that LlavaProcessor expands; for the text-only model
# it is plain text.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + '" + IMAGE_TOKEN + "' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set content = ns.text -%}"
    "{%- endif -%}"
    "{{- '" + IM_START + "' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- content + '" + IM_END + "\\n' -}}{%- endgeneration -%}"
    "{%- else -%}{{- content + '" + IM_END + "\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + IM_START + "assistant\\n' -}}{%- endif -%}"
)

_WORDS = (
    "the", "a", "an", "is", "are", "was", "be", "to", "of", "and", "in", "that", "it", "for", "on",
    "with", "as", "at", "by", "from", "this", "not", "but", "or", "so", "if", "we", "you", "they",
    "he", "she", "what", "which", "when", "how", "why", "answer", "question", "step", "first",
    "then", "next", "finally", "because", "therefore", "total", "sum", "add", "subtract",
    "multiply", "divide", "result", "number", "equals", "check", "safe", "unsafe", "cannot",
    "help", "sorry", "I", "will", "explain", "think", "carefully", "let", "us", "compute",
    "correct", "wrong", "image", "shows", "picture", "color", "red", "green", "blue", "left",
    "right", "yes", "no", "true", "false",
)


def default_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """A few hundred synthetic lines: chat turns, <think> steps, arithmetic, common English."""
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12)))
        kind = i % 4
        if kind == 0:
            lines.append(f"{IM_START}user\nWhat is {a} + {b}?{IM_END}\n")
        elif kind == 1:
            lines.append(
                f"{IM_START}assistant\n{THINK_OPEN}\n1. Add {a} and {b}.\n2. {a} + {b} = {a + b}.\n"
                f"{THINK_CLOSE}\nThe answer is {a + b}.{IM_END}\n"
            )
        elif kind == 2:
            lines.append(f"{words.capitalize()}.\n\n{a} * {b} = {a * b}\n")
        else:
            lines.append(f"Step {i % 9 + 1}) {words}, so {a} - {b} = {a - b}.\n")
    return lines


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it with ChatML tokens and template.

    Byte-level means every string (newlines and unicode included) encodes and decodes exactly.
    ``<think>``/``</think>`` are added but *not* special, so ``skip_special_tokens=True`` keeps them
    in streamed text while dropping ``<|im_end|>`` and padding.
    """
    tok = Tokenizer(models.BPE())
    # Single digits keep arithmetic tokenised consistently (no "123" merges for a few numbers).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [IM_START, IM_END, PAD]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_tokens(
        [
            AddedToken(THINK_OPEN, special=False, normalized=False),
            AddedToken(THINK_CLOSE, special=False, normalized=False),
        ]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _llama_config(tokenizer: PreTrainedTokenizerFast, *, hidden_size: int, layers: int, heads: int,
                  max_positions: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )


def _set_generation_ids(model: Any, tokenizer: PreTrainedTokenizerFast) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


def build_causal_lm(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> Any:
    """A randomly initialised Llama causal LM sized for ``tokenizer`` (deterministic for ``seed``)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _llama_config(
        tokenizer, hidden_size=hidden_size, layers=layers, heads=heads, max_positions=max_positions
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _set_generation_ids(model, tokenizer)
    return model


def build_tiny_lm(out_dir: Path, *, texts: Iterable[str] | None = None, **dims: Any) -> Path:
    """Train a tokenizer, build a tiny Llama and save both to ``out_dir``; returns ``out_dir``.

    ``dims`` go to ``build_causal_lm`` (hidden_size, layers, heads, max_positions, seed) and
    ``vocab_size`` to ``train_tokenizer``.
    """
    out_dir = Path(out_dir)
    vocab_size = dims.pop("vocab_size", 512)
    tokenizer = train_tokenizer(texts if texts is not None else default_corpus(), vocab_size=vocab_size)
    model = build_causal_lm(tokenizer, **dims)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_vlm(out_dir: Path, *, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """Build and save a tiny LLaVA (CLIP vision tower + Llama text model) with its processor.

    Reload with ``AutoProcessor.from_pretrained`` and ``AutoModelForImageTextToText`` (or
    ``LlavaForConditionalGeneration``). A 32x32 image becomes 16 image tokens with patch size 8.
    """
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(default_corpus(), vocab_size=512)
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    text_config = _llama_config(tokenizer, hidden_size=32, layers=1, heads=2, max_positions=512)
    vision_config = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer)
    image_processor = LlavaImageProcessorPil(
        size={"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token; "default" strategy drops it again
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
