"""Small real models for end-to-end tests, built locally in seconds.

`build_scripted_lm` trains a tiny Llama until it has memorised one chain of thought: greedy decoding
then reproduces it exactly for any prompt, so live tests can assert on steps. It is a real model
generating with transformers, not a stand-in.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_STEPS = [
    "1. 12 + 30 = 42",
    "2. 42 - 5 = 37",
    "3. 37 + 8 = 44",
    "4. check: 44 - 8 = 36",
    "5. so the answer is 44",
]
SCRIPT_ANSWER = "44"


def build_scripted_lm(
    out_dir: Path,
    *,
    steps: int = 160,
    script: list[str] | None = None,
    answer: str = SCRIPT_ANSWER,
    corpus_has_script: bool = True,
) -> Path:
    """``script``/``answer``: the chain of thought it learns (default SCRIPT_STEPS). With
    ``corpus_has_script=False`` the tokenizer never sees the script, so characters outside the
    ASCII corpus stay split into byte tokens (a multi-byte character takes several tokens)."""

    from trainer_worker.training import tiny
    from trainer_worker.vocabulary.format import render_completion

    target = render_completion(script or SCRIPT_STEPS, answer)
    prompt = [{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}]
    corpus = [*tiny.default_corpus(200), target] if corpus_has_script else tiny.default_corpus(200)
    tokenizer = tiny.train_tokenizer(corpus * 2, vocab_size=400)
    model = tiny.build_causal_lm(tokenizer, hidden_size=64, layers=2, heads=4, max_positions=256, seed=0)
    return _memorise(model, tokenizer, prompt, [target], out_dir, steps=steps)


RIGHT_STEPS = ["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 45"]
RIGHT_ANSWER = "45"


def build_two_minded_lm(out_dir: Path, *, steps: int = 200, wrong_share: int = 3, right_share: int = 2) -> Path:
    """A tiny Llama that learned two chains for "Compute 12 + 30 - 5 + 8.": the scripted wrong one
    (SCRIPT_STEPS, "44") ``wrong_share`` times for every ``right_share`` times the right one
    (RIGHT_STEPS, "45"). They part at the last digit of step 3, so greedy decoding writes the wrong
    chain while sampling writes the right one about 2 times in 5: what a guide can find."""

    from trainer_worker.training import tiny
    from trainer_worker.vocabulary.format import render_completion

    targets = [render_completion(SCRIPT_STEPS, SCRIPT_ANSWER)] * wrong_share + \
        [render_completion(RIGHT_STEPS, RIGHT_ANSWER)] * right_share
    prompt = [{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}]
    tokenizer = tiny.train_tokenizer([*tiny.default_corpus(200), *targets] * 2, vocab_size=400)
    model = tiny.build_causal_lm(tokenizer, hidden_size=64, layers=2, heads=4, max_positions=256, seed=0)
    return _memorise(model, tokenizer, prompt, targets, out_dir, steps=steps)


def _memorise(model, tokenizer, prompt: list[dict], targets: list[str], out_dir: Path, *, steps: int) -> Path:
    """Train ``model`` full-batch on ``prompt`` → each of ``targets`` (loss on the completion only)
    for ``steps`` AdamW steps, then save model and tokenizer to ``out_dir``."""
    import torch

    prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    n_prefix = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    batch = tokenizer([prefix + t + tokenizer.eos_token for t in targets], add_special_tokens=False,
                      padding=True, return_tensors="pt")
    tokenizer.padding_side = side
    labels = batch["input_ids"].clone()
    labels[:, :n_prefix] = -100
    labels[batch["attention_mask"] == 0] = -100
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
