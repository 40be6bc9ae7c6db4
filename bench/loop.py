"""Benchmark: does correcting the first wrong step beat outcome-only labels? And does GRPO with the
length-efficiency term shorten the chain of thought?

A script over the trainer (no database, no worker: it calls ``run_stage`` and ``evaluate_model``
directly, with the records the studio's ``sft`` snapshot would hold), so one full run fits in about
15 minutes on two cores:

    .venv/bin/python bench/loop.py --demo-model .data/models/demo      # built by build_demo_model

1. The demo model answers N training prompts of the demo task (greedy, the "traces").
2. Process supervision (the studio's loop): a simulated supervisor (``demo_task.first_wrong_step``
   / ``correct_step``) corrects the first wrong step of each wrong trace; the model continues from
   the corrected prefix (as a branch does); traces without a wrong step and with a right answer are
   accepted as they are. SFT on those records.
3. Outcome-only baseline: the same N traces labelled only right/wrong; SFT on the right ones
   (rejection-sampling SFT).
4. Held-out accuracy (``demo_task.check_answer``) before and after, for N = 50, 100, 200.
5. GRPO from the demo model with the length-efficiency term (answer + format + length rewards) on
   training prompts; mean CoT tokens on the held-out prompts before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trainer_worker.training import demo_task
from trainer_worker.vocabulary.format import render_completion, render_prefix, split_completion


def _generate(model, tokenizer, prompts: list[str], prefixes: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``prefix`` after each prompt's generation prompt (batched, left-padded)."""
    import torch

    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(prompts), 50):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) + pre
                 for p, pre in zip(prompts[start:start + 50], prefixes[start:start + 50], strict=True)]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.extend(tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def _sft_record(prompt: str, completion: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def _train_sft(base: Path, rows: list[dict], out: Path, epochs: float, lr: float) -> tuple[Path, float]:
    from trainer_worker.training.config import StageConfig
    from trainer_worker.training.runner import run_stage

    out.mkdir(parents=True, exist_ok=True)
    data = out / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = StageConfig(stage="sft", base_model_path=str(base), output_dir=str(out), dataset_path=str(data),
                         num_train_epochs=epochs, per_device_batch_size=8, learning_rate=lr, max_length=256,
                         logging_steps=50, save_steps=100_000, save_total_limit=1)
    t0 = time.monotonic()
    result = run_stage(config)
    return result.output_path, time.monotonic() - t0


def _accuracy(path: Path, heldout: list[demo_task.Problem], max_new_tokens: int) -> dict:
    from trainer_worker.training.evaluate import evaluate_model

    items = [{"prompt": [{"role": "user", "content": p.prompt}], "reference": p.answer, "category": p.category}
             for p in heldout]
    by_key = {repr(i["prompt"]): p.prompt for i, p in zip(items, heldout, strict=True)}
    scores = evaluate_model(path, items, max_new_tokens=max_new_tokens,
                            check_answer=lambda prompt, answer: demo_task.check_answer(by_key[repr(prompt)], answer))
    return {k: scores[k] for k in ("accuracy", "safety_score", "mean_cot_tokens", "format_rate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-model", type=Path, required=True)
    parser.add_argument("--sizes", default="50,100,200")
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4, help="SFT learning rate (the demo model is already trained)")
    parser.add_argument("--grpo-steps", type=int, default=15)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    heldout = demo_task.make_problems(args.heldout, seed=1234, split="heldout")
    train = demo_task.make_problems(max(sizes), seed=99, split="train")
    report: dict = {"demo_model": str(args.demo_model), "heldout": len(heldout), "epochs": args.epochs, "lr": args.lr}
    t_start = time.monotonic()
    report["before"] = _accuracy(args.demo_model, heldout, args.max_new_tokens)

    tokenizer = AutoTokenizer.from_pretrained(str(args.demo_model))
    model = AutoModelForCausalLM.from_pretrained(str(args.demo_model)).eval()
    prompts = [p.prompt for p in train]
    traces = _generate(model, tokenizer, prompts, [""] * len(prompts), args.max_new_tokens)

    # The supervisor's corrections, and the model continuing from each corrected prefix.
    corrected: dict[int, str] = {}
    right: set[int] = set()
    todo = []
    for i, (problem, text) in enumerate(zip(train, traces, strict=True)):
        steps, answer = split_completion(text)
        if demo_task.check_answer(problem.prompt, answer):
            right.add(i)
        k = demo_task.first_wrong_step(problem.prompt, steps)
        if k is None:
            if i in right:
                corrected[i] = text  # accepted as it is
            continue
        try:
            fixed = demo_task.correct_step(problem.prompt, steps, k)
        except ValueError:
            # Past the reference chain: the fix is to stop and answer; the supervisor closes it.
            corrected[i] = render_completion(steps[:k], demo_task.solve(problem.prompt).answer)
            continue
        todo.append((i, render_prefix([*steps[:k], fixed])))
    continuations = _generate(model, tokenizer, [prompts[i] for i, _ in todo], [p for _, p in todo],
                              args.max_new_tokens)
    for (i, prefix), cont in zip(todo, continuations, strict=True):
        corrected[i] = prefix + cont
    report["traces"] = {"n": len(train), "right_answer": len(right), "corrections": len(todo)}
    report["generation_s"] = time.monotonic() - t_start

    for n in sizes:
        process = [_sft_record(prompts[i], corrected[i]) for i in range(n) if i in corrected]
        outcome = [_sft_record(prompts[i], traces[i]) for i in range(n) if i in right]
        row: dict = {"process_records": len(process), "outcome_records": len(outcome)}
        for name, rows in (("process", process), ("outcome", outcome)):
            if not rows:
                row[name] = None
                continue
            path, seconds = _train_sft(args.demo_model, rows, work / f"{name}-{n}", args.epochs, args.lr)
            row[name] = {**_accuracy(path, heldout, args.max_new_tokens), "train_s": round(seconds, 1)}
        report[f"n={n}"] = row
        print(json.dumps({f"n={n}": row}), flush=True)

    # GRPO with the length-efficiency term on training prompts of the demo task.
    from trainer_worker.training.config import StageConfig
    from trainer_worker.training.runner import run_stage

    rl = work / "rl.jsonl"
    rl.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p.prompt}], "reference": p.answer,
                                      "category": "knowledge"}) + "\n" for p in train[:64]))
    config = StageConfig(stage="grpo", base_model_path=str(args.demo_model), output_dir=str(work / "grpo"),
                         dataset_path=str(rl), max_steps=args.grpo_steps, per_device_batch_size=8,
                         num_generations=4, max_completion_length=args.max_new_tokens, learning_rate=5e-5,
                         logging_steps=5, save_steps=100_000, temperature=1.0,
                         reward_weights={"format": 0.5, "answer": 1.0, "verifier": 0.0, "prm": 0.0, "length": 1.0})
    t0 = time.monotonic()
    result = run_stage(config)
    report["grpo"] = {"train_s": round(time.monotonic() - t0, 1), "steps": result.global_step,
                      "before": report["before"], "after": _accuracy(result.output_path, heldout, args.max_new_tokens)}
    report["total_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
