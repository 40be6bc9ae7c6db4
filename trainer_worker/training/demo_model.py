"""Build the project's demo model: a tiny Llama trained on CPU on the synthetic demo task.

No machine here downloads weights, so the studio ships a model it trains itself in a few minutes:
a byte-level BPE tokenizer and a ~1M-parameter Llama (``tiny``) trained as a causal LM on
chat-formatted problems from ``demo_task`` (loss on the assistant message only), then evaluated
with greedy decoding on held-out prompts. It is meant to be *partly* right: it gets the format and
most refusals, and a fair share of the arithmetic, so human corrections have mistakes to fix.

CLI: ``python -m trainer_worker.training.demo_model OUT_DIR [--budget SECONDS] [--seed N]``.
Django-free.
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

# Model and optimisation settings, measured on two shared CPU cores (about 3 steps/s of batch 32
# with one torch thread). Held-out accuracy rises sharply with steps and falls with operand size:
# with operands up to 9 a full 450-step schedule gets ~41%, 550 steps 73-80%, 700 ~89%; up to 14, 450
# steps ~15%; up to 19, 800 steps ~58%. MAX_STEPS caps training on fast machines so the demo model keeps
# making mistakes for supervisors to correct; a slow machine stops at the time budget instead.
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
MAX_STEPS = 500


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
    n_eval: int
    n_arithmetic: int
    n_unsafe: int
    accuracy: float  # right final answer, held-out arithmetic
    refusal_rate: float  # refused, held-out unsafe requests
    over_refusal_rate: float  # refused, held-out arithmetic (should be 0)
    format_rate: float  # "<think> steps </think> answer" parses, all held-out prompts
    correctable_rate: float  # wrong arithmetic answers with a wrong step that first_wrong_step finds
    config: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _messages(problem: demo_task.Problem) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": problem.prompt},
        {"role": "assistant", "content": demo_task.render_target(problem)},
    ]


def _prompt_text(tokenizer: Any, prompt: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def _encode_batch(tokenizer: Any, problems: list[demo_task.Problem]) -> dict[str, Any]:
    """Right-padded input ids with labels on the assistant message (and its end token) only."""
    import torch

    prompts = [_prompt_text(tokenizer, p.prompt) for p in problems]
    fulls = [tokenizer.apply_chat_template(_messages(p), tokenize=False) for p in problems]
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


def _lr_at(step: int, elapsed: float, budget: float, max_steps: int) -> float:
    # Cosine decay driven by whichever runs out first, time or steps, so the schedule ends properly
    # on a slow (shared) machine as well as on a fast one.
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    frac = min(1.0, max(elapsed / budget if budget > 0 else 1.0, step / max_steps))
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


def evaluate(model: Any, tokenizer: Any, problems: list[demo_task.Problem]) -> dict[str, Any]:
    """Greedy-decode ``problems`` and score them against the task's checkers."""
    texts = generate(model, tokenizer, [p.prompt for p in problems])
    arith = right = unsafe = refused = over = formatted = wrong = correctable = 0
    samples = []
    for problem, text in zip(problems, texts, strict=True):
        steps, answer = split_completion(text)
        ok_format = format_ok(text)
        formatted += ok_format
        if problem.kind == "arithmetic":
            arith += 1
            correct = demo_task.check_answer(problem.prompt, answer)
            right += correct
            over += demo_task.is_refusal(answer)
            if not correct:
                wrong += 1
                correctable += demo_task.first_wrong_step(problem.prompt, steps) is not None
        else:
            unsafe += 1
            correct = demo_task.is_refusal(answer)
            refused += correct
        if len(samples) < 8:
            samples.append({"prompt": problem.prompt, "completion": text, "correct": bool(correct)})
    return {
        "n_eval": len(problems),
        "n_arithmetic": arith,
        "n_unsafe": unsafe,
        "accuracy": right / arith if arith else 0.0,
        "refusal_rate": refused / unsafe if unsafe else 0.0,
        "over_refusal_rate": over / arith if arith else 0.0,
        "format_rate": formatted / len(problems) if problems else 0.0,
        "correctable_rate": correctable / wrong if wrong else 0.0,
        "samples": samples,
    }


def build_demo_model(
    out_dir: Path,
    *,
    time_budget_s: float = 240,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
    n_eval: int = 200,
    max_steps: int = MAX_STEPS,
    eval_seed: int = 1234,
    num_threads: int = 1,
) -> DemoReport:
    """Train the demo model for at most ``time_budget_s`` seconds, evaluate it and save it.

    ``progress`` gets ``{step, total, loss, elapsed}`` about twice a second (``total`` is the step
    count the budget allows at the speed so far). The held-out prompts come from ``eval_seed`` so
    models trained with different seeds are compared on the same prompts.

    ``num_threads`` defaults to 1: on a shared 2-core machine a 2-thread torch ran this model 10-20x
    slower per step (threads spin waiting for each other when another process holds a core),
    measured 0.3-0.7 s/step with one thread against 6 s/step with two under load.
    """
    import torch

    out_dir = Path(out_dir)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        rng = random.Random(seed)
        corpus = demo_task.make_problems(TOKENIZER_CORPUS, seed=seed)
        tokenizer = tiny.train_tokenizer(
            [demo_task.render_target(p) for p in corpus] + [p.prompt for p in corpus], vocab_size=VOCAB_SIZE
        )
        model = tiny.build_causal_lm(
            tokenizer, hidden_size=HIDDEN_SIZE, layers=LAYERS, heads=HEADS, max_positions=MAX_POSITIONS, seed=seed
        )
        model.generation_config.max_new_tokens = MAX_NEW_TOKENS
        model.generation_config.do_sample = False
        params = sum(p.numel() for p in model.parameters())
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, weight_decay=0.01, betas=(0.9, 0.98))
        model.train()

        # Fresh problems every step (the arithmetic space is far larger than what a few minutes see),
        # drawn from the train split only.
        def next_batch() -> list[demo_task.Problem]:
            batch: list[demo_task.Problem] = []
            while len(batch) < BATCH_SIZE:
                problem = demo_task.make_problem(rng)
                if demo_task.split_of(problem.prompt) == "train":
                    batch.append(problem)
            return batch

        start = time.monotonic()
        step, window, last_report = 0, [], 0.0
        recent: deque[float] = deque(maxlen=20)  # the reported final loss: mean of the last steps
        while step < max_steps:
            elapsed = time.monotonic() - start
            if elapsed >= time_budget_s:
                break
            lr = _lr_at(step, elapsed, time_budget_s, max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = _encode_batch(tokenizer, next_batch())
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            recent.append(loss.item())
            if progress is not None:
                window.append(recent[-1])
            elapsed = time.monotonic() - start
            if progress is not None and (elapsed - last_report >= 0.5 or step == max_steps):
                last_report = elapsed
                progress({"step": step, "total": _total(step, elapsed, time_budget_s, max_steps),
                          "loss": sum(window) / len(window), "elapsed": elapsed})
                window = []
        train_seconds = time.monotonic() - start
        loss_value = sum(recent) / len(recent) if recent else float("nan")
        if progress is not None:
            progress({"step": step, "total": step, "loss": loss_value, "elapsed": train_seconds})

        eval_start = time.monotonic()
        heldout = demo_task.make_problems(n_eval, seed=eval_seed, split="heldout")
        scores = evaluate(model, tokenizer, heldout)
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
            examples_seen=step * BATCH_SIZE,
            final_loss=round(loss_value, 4),
            config={
                "hidden_size": HIDDEN_SIZE,
                "layers": LAYERS,
                "heads": HEADS,
                "vocab_size": len(tokenizer),
                "batch_size": BATCH_SIZE,
                "peak_lr": PEAK_LR,
                "time_budget_s": time_budget_s,
                "max_steps": max_steps,
                "num_threads": num_threads,
                "eval_seed": eval_seed,
                "max_operands": demo_task.MAX_OPERANDS,
                "max_operand": demo_task.MAX_OPERAND,
            },
            **scores,
        )
        (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        return report
    finally:
        torch.set_num_threads(old_threads)


def _total(step: int, elapsed: float, budget: float, max_steps: int) -> int:
    if elapsed <= 0:
        return max_steps
    return max(step, min(max_steps, int(step * budget / elapsed)))


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
    parser.add_argument("--budget", type=float, default=240, help="training seconds (default 240)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see build_demo_model)")
    args = parser.parse_args(argv)
    report = build_demo_model(args.out_dir, time_budget_s=args.budget, seed=args.seed, progress=progress_bar,
                              n_eval=args.n_eval, num_threads=args.threads)
    sys.stderr.write("\n")
    summary = {k: v for k, v in report.to_dict().items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
