"""Benchmark: the same SFT run on 1 process and on 2 (``accelerate launch``, gloo on CPU), 3 seeds.

    .venv/bin/python bench/multiproc.py [--steps 40] [--seeds 0 1 2]

No database or worker: it calls ``trainer_worker.training.launch.train`` directly, which is what the
train worker calls (``num_processes`` 1 runs in this process; 2 starts two ranks).

* Same data and the same global batch: 1 process x batch 8 against 2 processes x batch 4, same
  base model (built here, random weights), same seed, same learning rate; loss logged every step
  (rank 0 logs the mean over the ranks, weighted by tokens).
* Curve gap: per step, |loss(2 processes) - loss(1 process)| for one seed. The noise it is compared
  with is the baseline of this same run: per step, |loss(seed a) - loss(seed b)| on 1 process (the
  seed only changes the order the data is drawn in). "Same curve within noise" means the first is
  far below the second.
* Speed: seconds in ``trainer.train()`` (the trainer's own loop) and wall seconds of the whole call
  (the 2-process wall includes starting the launcher and two interpreters that import torch/TRL;
  the 1-process call runs in this warm process). Two baselines: one process with a thread per core
  (torch's default) and one process with one thread; the 2 ranks get cores / 2 threads each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _dataset(path: Path, n: int) -> Path:
    from trainer_worker.training import demo_task

    rows = []
    for problem in demo_task.make_problems(n, seed=7):
        rows.append({"messages": [{"role": "user", "content": problem.prompt},
                                  {"role": "assistant", "content": demo_task.render_target(problem)}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(work: Path, base: Path, data: Path, *, processes: int, seed: int, steps: int, batch: int,
         threads: int) -> dict:
    import torch

    from trainer_worker.training.config import StageConfig
    from trainer_worker.training.launch import train

    torch.set_num_threads(threads)  # the single process's threads (each rank gets cores / ranks)
    out = work / f"p{processes}-t{threads}-s{seed}"
    config = StageConfig.from_dict({
        "stage": "sft", "base_model_path": str(base), "output_dir": str(out), "dataset_path": str(data),
        "max_steps": steps, "save_steps": 10_000, "logging_steps": 1, "per_device_batch_size": batch // processes,
        "max_length": 256, "learning_rate": 1e-3, "seed": seed, "num_processes": processes,
    })
    losses: dict[int, float] = {}

    def on_metrics(step: int, values: dict[str, float]) -> None:
        if "loss" in values:
            losses[step] = values["loss"]

    started = time.monotonic()
    result = train(config, on_metrics=on_metrics)
    wall = time.monotonic() - started
    assert not result.cancelled and result.global_step == steps, result
    assert sorted(losses) == list(range(1, steps + 1)), sorted(losses)
    return {"loss": [losses[s] for s in range(1, steps + 1)], "train_s": result.train_seconds, "wall_s": wall,
            "tokens": result.train_tokens}


def _gap(a: list[float], b: list[float]) -> dict[str, float]:
    diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
    return {"mean": statistics.fmean(diffs), "max": max(diffs)}


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {sd:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8, help="global batch (per process: batch / processes)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=256)
    args = parser.parse_args()

    from trainer_worker.training.tiny import build_tiny_lm

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-multiproc-"))
    base = build_tiny_lm(work / "base", hidden_size=args.hidden, layers=args.layers, heads=4)
    data = _dataset(work / "sft.jsonl", args.rows)
    # Keys: 1 = one process with every core's thread; "1t" = one process, one thread; 2 = two ranks
    # with cores / 2 threads each.
    layouts = {1: (1, cores), "1t": (1, 1), 2: (2, max(1, cores // 2))}
    runs: dict[tuple[int | str, int], dict] = {}
    for seed in args.seeds:
        for key, (processes, threads) in layouts.items():
            runs[key, seed] = r = _run(work, base, data, processes=processes, seed=seed, steps=args.steps,
                                       batch=args.batch, threads=threads)
            print(f"seed {seed}, {processes} process(es) x {threads} thread(s): final loss {r['loss'][-1]:.4f}, "
                  f"train {r['train_s']:.2f} s, wall {r['wall_s']:.1f} s", flush=True)

    gaps = {seed: _gap(runs[2, seed]["loss"], runs[1, seed]["loss"]) for seed in args.seeds}
    thread_gaps = {seed: _gap(runs["1t", seed]["loss"], runs[1, seed]["loss"]) for seed in args.seeds}
    noise = {f"{a}-{b}": _gap(runs[1, a]["loss"], runs[1, b]["loss"])
             for a, b in itertools.combinations(args.seeds, 2)}
    train_ratio = [runs[2, s]["train_s"] / runs[1, s]["train_s"] for s in args.seeds]
    train_ratio_1t = [runs[2, s]["train_s"] / runs["1t", s]["train_s"] for s in args.seeds]
    wall_ratio = [runs[2, s]["wall_s"] / runs[1, s]["wall_s"] for s in args.seeds]
    wall_ratio_1t = [runs[2, s]["wall_s"] / runs["1t", s]["wall_s"] for s in args.seeds]
    tokens_equal = all(runs[2, s]["tokens"] == runs[1, s]["tokens"] for s in args.seeds)

    print()
    print(f"tiny Llama hidden {args.hidden} x {args.layers} layers, {args.rows} rows, global batch {args.batch}, "
          f"{args.steps} steps, CPU threads {os.cpu_count()}")
    print("| seed | mean per-step gap, 2 vs 1 process | max gap | 1 process, 1 vs all threads: mean | max |")
    print("| --- | --- | --- | --- | --- |")
    for seed, g in gaps.items():
        t = thread_gaps[seed]
        print(f"| {seed} | {g['mean']:.2e} | {g['max']:.2e} | {t['mean']:.2e} | {t['max']:.2e} |")
    print("| seeds | mean per-step gap between seeds, 1 process (noise) | max gap |")
    print("| --- | --- | --- |")
    for pair, g in noise.items():
        print(f"| {pair} | {g['mean']:.4f} | {g['max']:.4f} |")
    worst_gap = max(g["mean"] for g in gaps.values())
    least_noise = min(g["mean"] for g in noise.values()) if noise else float("nan")
    print(f"\nlargest curve gap / smallest seed noise: {worst_gap / least_noise:.2e}")
    print(f"same tokens trained in every pair: {tokens_equal}")
    print(f"train loop seconds, 2 processes / 1 process x {cores} threads: {_ms(train_ratio)}")
    print(f"train loop seconds, 2 processes / 1 process x 1 thread:  {_ms(train_ratio_1t)}")
    print(f"wall seconds, 2 processes / 1 process x {cores} threads:       {_ms(wall_ratio)}")
    print(f"wall seconds, 2 processes / 1 process x 1 thread:        {_ms(wall_ratio_1t)}")
    print(json.dumps({"gaps": gaps, "thread_gaps": thread_gaps, "noise": noise, "train_ratio": train_ratio,
                      "train_ratio_1t": train_ratio_1t, "wall_ratio": wall_ratio, "wall_ratio_1t": wall_ratio_1t,
                      "runs": {f"{k}-s{s}": {n: v for n, v in r.items() if n != "loss"}
                               for (k, s), r in runs.items()}}))


if __name__ == "__main__":
    main()
