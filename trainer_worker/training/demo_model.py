"""Build the project's demo model: a tiny Llama trained on CPU on the demo task's cold-start data.

No machine here downloads weights, so the studio ships a model it trains itself in a few minutes:
a byte-level BPE tokenizer and a ~1M-parameter Llama (``tiny``) trained as a causal LM on
chat-formatted problems from ``demo_task`` (loss on the assistant message only), then evaluated
with greedy decoding on each class's held-out prompts. The cold-start data carries the task's
planted failures (``demo_task.cold_start_target``), so the model doubles wrongly, complies with
disguised unsafe requests and pads some chains: mistakes that a supervisor's corrections can fix.

It trains for a fixed number of steps (MAX_STEPS) from a fixed seed, so every machine builds the
same model (within float noise); a slow machine takes longer instead of learning less.

CLI: ``python -m trainer_worker.training.demo_model OUT_DIR [--steps N] [--seed N]``. Django-free.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer_worker.training import demo_task, tiny
from trainer_worker.vocabulary.format import THINK_CLOSE, THINK_OPEN, split_completion

REPORT_FILE = "demo_report.json"

# Model and optimisation settings, measured on two CPU cores (about 3 steps/s of batch 32 with one
# torch thread when the machine is idle). 700 steps leave plain arithmetic at ~80%: good enough to
# be useful, with slips left for supervisors to correct.
HIDDEN_SIZE = 128
LAYERS = 4
HEADS = 4
MAX_POSITIONS = 256
VOCAB_SIZE = 512
BATCH_SIZE = 32
PEAK_LR = 3e-3
WARMUP_STEPS = 30
MAX_NEW_TOKENS = 128
TOKENIZER_CORPUS = 4000
EVAL_BATCH = 50
MAX_STEPS = 700


@dataclass
class DemoReport:
    """What was built and how well it does on held-out prompts (rates are 0..1)."""

    out_dir: str
    seed: int
    params: int
    train_seconds: float
    eval_seconds: float
    steps: int
    examples_seen: int
    final_loss: float
    n_eval: int  # held-out prompts, all classes
    accuracy: float  # right final answer, held-out general arithmetic
    refusal_rate: float  # refused, held-out plain unsafe requests
    format_rate: float  # "<think> steps </think> answer" parses, all held-out prompts
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)  # per class: n, accuracy, refusal_rate, ...
    config: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _messages(prompt: str, target: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}]


def _prompt_text(tokenizer: Any, prompt: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def _encode_batch(tokenizer: Any, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Right-padded input ids of (prompt, target) pairs, labels on the assistant message (and its
    end token) only."""
    import torch

    problems = pairs
    prompts = [_prompt_text(tokenizer, p) for p, _ in pairs]
    fulls = [tokenizer.apply_chat_template(_messages(p, t), tokenize=False) for p, t in pairs]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    width = max(len(ids) for ids in full_ids)
    input_ids = torch.full((len(problems), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(problems), width), -100, dtype=torch.long)
    attention = torch.zeros((len(problems), width), dtype=torch.long)
    for i, (p_ids, f_ids) in enumerate(zip(prompt_ids, full_ids, strict=True)):
        # The ChatML template renders the prompt verbatim and special tokens split the text, so the
        # prompt's ids are a prefix of the full conversation's; checked, since the mask relies on it.
        if f_ids[: len(p_ids)] != p_ids:
            raise RuntimeError("prompt tokens are not a prefix of the conversation tokens")
        n = len(f_ids)
        input_ids[i, :n] = torch.tensor(f_ids)
        attention[i, :n] = 1
        labels[i, len(p_ids) : n] = torch.tensor(f_ids[len(p_ids) :])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _lr_at(step: int, max_steps: int) -> float:
    # Linear warm-up, then cosine decay over the fixed step count (the same on every machine).
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    frac = min(1.0, step / max_steps)
    return PEAK_LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def format_ok(text: str) -> bool:
    """Whether a completion is ``<think>`` steps ``</think>`` answer, with steps and an answer."""
    stripped = text.strip()
    if not stripped.startswith(THINK_OPEN) or stripped.count(THINK_CLOSE) != 1:
        return False
    steps, answer = split_completion(stripped)
    return bool(steps) and bool(answer)


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = MAX_NEW_TOKENS,
             batch_size: int = EVAL_BATCH) -> list[str]:
    """Greedy completions (assistant text, special tokens dropped) for user prompts."""
    import torch

    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # batched decoding continues every row from its last token
    outputs: list[str] = []
    try:
        model.eval()
        for start in range(0, len(prompts), batch_size):
            chunk = [_prompt_text(tokenizer, p) for p in prompts[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def evaluate(model: Any, tokenizer: Any, problems: list[demo_task.Problem],
             batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """Greedy-decode ``problems`` and score them per class against the task's checkers."""
    from trainer_worker.training.evaluate import score_completions

    texts = generate(model, tokenizer, [p.prompt for p in problems], batch_size=batch_size)
    items = [{"prompt": p.prompt, "reference": None, "category": p.category, "klass": p.klass} for p in problems]
    scores = score_completions(items, texts, tokenizer,
                               check_answer=lambda prompt, answer: demo_task.check_answer(prompt, answer))
    classes = scores.get("classes", {})
    samples = []
    for problem, text in zip(problems, texts, strict=True):
        if len(samples) < 12 and sum(s["klass"] == problem.klass for s in samples) < 2:
            samples.append({"prompt": problem.prompt, "klass": problem.klass, "completion": text,
                            "correct": demo_task.check_answer(problem.prompt, split_completion(text)[1])})
    return {
        "n_eval": len(problems),
        "accuracy": (classes.get("general") or {}).get("accuracy") or 0.0,
        "refusal_rate": (classes.get("unsafe") or {}).get("refusal_rate") or 0.0,
        "format_rate": scores["format_rate"],
        "classes": classes,
        "samples": samples,
    }


def heldout_problems(n_per_class: int, eval_seed: int = 1234) -> list[demo_task.Problem]:
    """The held-out prompts of every class (up to ``n_per_class`` distinct ones each)."""
    return [p for problems in demo_task.heldout_sets(n_per_class, seed=eval_seed).values() for p in problems]


def headline(report: dict[str, Any]) -> str:
    """One line per the report's classes, for a terminal."""
    parts = []
    for klass, row in report.get("classes", {}).items():
        if klass == "benign":
            parts.append(f"benign refused {row['refusal_rate']:.0%}")
        elif klass in ("unsafe", "disguised"):
            parts.append(f"{klass} refused {row['refusal_rate']:.0%}")
        else:
            parts.append(f"{klass} {row['accuracy']:.0%}")
    return ", ".join(parts)


def build_demo_model(
    out_dir: Path,
    *,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
    n_eval: int = 100,
    max_steps: int = MAX_STEPS,
    eval_seed: int = 1234,
    num_threads: int = 1,
    class_weights: dict[str, float] | None = None,
    hidden_size: int = HIDDEN_SIZE,
    layers: int = LAYERS,
    batch_size: int = BATCH_SIZE,
) -> DemoReport:
    """Train the demo model for ``max_steps`` steps on cold-start data, evaluate it and save it.

    ``progress`` gets ``{step, total, loss, elapsed}`` about twice a second. ``n_eval`` is the
    number of held-out prompts per class (fewer where a class has fewer distinct ones); they come
    from ``eval_seed`` so models trained with different seeds are compared on the same prompts.
    ``class_weights`` (default ``demo_task.CLASS_WEIGHTS``) mixes the classes of the training data;
    the smaller sizes serve the tests.

    ``num_threads`` defaults to 1: on a shared 2-core machine a 2-thread torch ran this model 10-20x
    slower per step (threads spin waiting for each other when another process holds a core),
    measured 0.3-0.7 s/step with one thread against 6 s/step with two under load.
    """
    import torch

    out_dir = Path(out_dir)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    weights = class_weights or demo_task.CLASS_WEIGHTS
    try:
        rng = random.Random(seed)
        corpus_rng = random.Random(seed + 1)
        corpus = demo_task.make_problems(TOKENIZER_CORPUS, seed=seed, weights={k: 1.0 for k in demo_task.CLASSES})
        texts = [demo_task.render_target(p) for p in corpus] + [p.prompt for p in corpus]
        texts += [demo_task.cold_start_target(p, corpus_rng) for p in corpus]
        tokenizer = tiny.train_tokenizer(texts, vocab_size=VOCAB_SIZE)
        model = tiny.build_causal_lm(
            tokenizer, hidden_size=hidden_size, layers=layers, heads=HEADS, max_positions=MAX_POSITIONS, seed=seed
        )
        model.generation_config.max_new_tokens = MAX_NEW_TOKENS
        model.generation_config.do_sample = False
        params = sum(p.numel() for p in model.parameters())
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, weight_decay=0.01, betas=(0.9, 0.98))
        model.train()

        # Fresh problems every step, from the train split only, answered by the cold-start data.
        def next_batch() -> list[tuple[str, str]]:
            batch: list[tuple[str, str]] = []
            while len(batch) < batch_size:
                problem = demo_task.make_problem(rng, weights)
                if demo_task.split_of(problem.prompt) == "train":
                    batch.append((problem.prompt, demo_task.cold_start_target(problem, rng)))
            return batch

        start = time.monotonic()
        step, window, last_report = 0, [], 0.0
        recent: deque[float] = deque(maxlen=20)  # the reported final loss: mean of the last steps
        while step < max_steps:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, max_steps)
            batch = _encode_batch(tokenizer, next_batch())
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            recent.append(loss.item())
            window.append(recent[-1])
            elapsed = time.monotonic() - start
            if progress is not None and (elapsed - last_report >= 0.5 or step == max_steps):
                last_report = elapsed
                progress({"step": step, "total": max_steps, "loss": sum(window) / len(window), "elapsed": elapsed})
                window = []
        train_seconds = time.monotonic() - start
        loss_value = sum(recent) / len(recent) if recent else float("nan")

        eval_start = time.monotonic()
        scores = evaluate(model, tokenizer, heldout_problems(n_eval, eval_seed))
        eval_seconds = time.monotonic() - eval_start

        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        report = DemoReport(
            out_dir=str(out_dir),
            seed=seed,
            params=params,
            train_seconds=round(train_seconds, 2),
            eval_seconds=round(eval_seconds, 2),
            steps=step,
            examples_seen=step * batch_size,
            final_loss=round(loss_value, 4),
            config={
                "task_version": demo_task.TASK_VERSION,
                "hidden_size": hidden_size,
                "layers": layers,
                "heads": HEADS,
                "vocab_size": len(tokenizer),
                "batch_size": batch_size,
                "peak_lr": PEAK_LR,
                "max_steps": max_steps,
                "num_threads": num_threads,
                "eval_seed": eval_seed,
                "class_weights": weights,
            },
            **scores,
        )
        (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        return report
    finally:
        torch.set_num_threads(old_threads)


def progress_bar(info: dict) -> None:
    total = max(1, int(info["total"]))
    frac = min(1.0, info["step"] / total)
    bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
    sys.stderr.write(
        f"\r[{bar}] {100 * frac:5.1f}%  step {info['step']}/{total}  loss {info['loss']:.3f}  "
        f"{info['elapsed']:.0f}s "
    )
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and evaluate the SafeLadder demo model on CPU.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=MAX_STEPS, help=f"training steps (default {MAX_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-eval", type=int, default=100, help="held-out prompts per class (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see build_demo_model)")
    args = parser.parse_args(argv)
    report = build_demo_model(args.out_dir, max_steps=args.steps, seed=args.seed, progress=progress_bar,
                              n_eval=args.n_eval, num_threads=args.threads)
    sys.stderr.write("\n")
    summary = {k: v for k, v in report.to_dict().items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
