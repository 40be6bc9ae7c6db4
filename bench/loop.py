"""Benchmark: does the loop pay? Human corrections against the same number of outcome labels,
through the studio, round after round; and GRPO with the length-efficiency term.

    .venv/bin/python bench/loop.py --quick        # one seed, one round (about 6 minutes idle)
    .venv/bin/python bench/loop.py                # seeds 0,1,2, two rounds each

Everything goes through the studio's services on a real PostgreSQL and Valkey (embedded ones under
``.data/bench`` when no DATABASE_URL / REDIS_URL is set), as a person's work would:

1. Each seed gets two projects with the demo model (``make run`` builds it; built here otherwise)
   serving, each class's held-out prompts (``split: heldout``, never in a snapshot) and training
   prompts of every class.
2. Corrections arm, per round: the simulated supervisor (``annotator.simulation``) starts M traces
   of the serving model, rates their steps, corrects the first wrong step, lets the model continue,
   repeats (at most 3 edits) and gives verdicts. Every action is one human label.
3. Outcome arm, per round: the same number of human labels spent as right/wrong verdicts on
   best-of-K samples (K=4, temperature 1) of the serving model: rejection-sampling SFT.
4. Each arm: an ``sft`` snapshot (redundant 0-rated steps dropped), an SFT run from the demo model
   on everything labelled so far, executed by the train worker's own code (``run_execute``, in this
   process: no broker hop), evaluated on the held-out prompts per class (EvalResult rows), promoted;
   the next round's traces come from the promoted model.
5. GRPO from the demo model on the corrections project's ``rl_prompts`` snapshot with the answer,
   format and length-efficiency rewards, evaluated the same way.

Writes ``report.json`` and ``loop.png`` under ``--out`` (default .data/bench/loop-<time>) and prints
one JSON object as its last line (the issue's keys; held-out fractions, token counts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from seeds import run_seeds  # noqa: E402  (bench/seeds.py, beside this script)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SAFELADDER_DATA_DIR", str(ROOT / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Queues of the bench's own: a studio's workers on the same Redis must not take its runs (this
# process executes them itself) nor its traces.
os.environ.setdefault("CELERY_TRAIN_QUEUE", "bench-loop-train")
os.environ.setdefault("CELERY_GENERATE_QUEUE", "bench-loop-generate")

SFT_CONFIG = {"learning_rate": 5e-5, "num_train_epochs": 12, "per_device_batch_size": 8, "max_length": 256,
              "save_steps": 100000, "logging_steps": 10}
SFT_FILTERS = {"redundant_steps": "drop"}
GRPO_CONFIG = {"learning_rate": 5e-5, "kl_beta": 0.1, "max_steps": 100, "per_device_batch_size": 8,
               "gradient_accumulation_steps": 2, "num_generations": 8, "max_completion_length": 96,
               "temperature": 1.0, "save_steps": 100000, "logging_steps": 10,
               "reward_weights": {"format": 0.5, "answer": 1.0, "verifier": 0.0, "prm": 0.0, "length": 1.0},
               "category_recipes": {"knowledge": ["format", "answer", "length"], "safety": ["format"],
                                    "general": ["format"]}}
# The classes of the traces supervisors see each round (--mix changes it; BENCHMARKS.md compares three).
TRACE_WEIGHTS = {"general": 0.2, "planted": 0.25, "padded": 0.05, "unsafe": 0.05, "disguised": 0.2, "benign": 0.25}
K_SAMPLES = 4
RL_POOL = 300


def _log(msg: str) -> None:
    print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- one seed ---------------------------------------------------------------------------------


class Seed:
    def __init__(self, seed: int, demo_dir: Path, args: argparse.Namespace, tag: str) -> None:
        from django.contrib.auth import get_user_model

        from annotator.models import ModelVersion
        from annotator.services.projects import project_create
        from annotator.simulation import StudioSupervisor

        self.seed, self.args, self.rng = seed, args, random.Random(seed)
        user_model = get_user_model()
        self.user, _ = user_model.objects.get_or_create(username="bench-supervisor")
        self.projects, self.sup, self.serving, self.base = {}, {}, {}, {}
        for arm in ("corrections", "outcome"):
            project = project_create(owner=self.user, name=f"loop {tag} seed {seed} {arm}",
                                     generation_defaults={"temperature": 0.0, "max_new_tokens": 128})
            base = ModelVersion.objects.create(project=project, name="demo", base_model=str(demo_dir),
                                               path=str(demo_dir), backend="local")
            project.serving_model = base
            project.save(update_fields=["serving_model"])
            self.projects[arm], self.base[arm], self.serving[arm] = project, base, base
            self.sup[arm] = StudioSupervisor(project, self.user)
        self._add_prompts()
        self.labels = {"corrections": 0, "outcome": 0}
        self.snapshots: dict[str, list] = {"corrections": [], "outcome": []}

    def _add_prompts(self) -> None:
        from annotator.models import Prompt
        from trainer_worker.training import demo_task

        heldout = [p for ps in demo_task.heldout_sets(self.args.n_eval).values() for p in ps]
        need = self.args.traces * self.args.rounds
        self.pools: dict[str, list] = {}
        for i, arm in enumerate(("corrections", "outcome")):
            # Distinct training prompts per arm and seed; the outcome arm needs K samples' worth fewer.
            train = demo_task.make_problems(need * 3, seed=1000 * self.seed + 17 + i, split="train",
                                            weights=self.args.mix_weights, distinct=True)
            rl = demo_task.make_problems(RL_POOL, seed=1000 * self.seed + 500,
                                         weights={"general": 0.4, "planted": 0.2, "padded": 0.4}, split="train",
                                         distinct=True) if arm == "corrections" else []
            rows = []
            for problem, split, role in ([(p, "heldout", "eval") for p in heldout]
                                         + [(p, "train", "trace") for p in train]
                                         + [(p, "train", "rl") for p in rl]):
                rows.append(Prompt(project=self.projects[arm], messages=[{"role": "user", "content": problem.prompt}],
                                   category=problem.category,
                                   reference_answer=problem.answer if problem.category == "knowledge" else "",
                                   metadata={"source": "demo_task", "klass": problem.klass, "split": split,
                                             "bench": role},
                                   created_by=self.user))
            Prompt.objects.bulk_create(rows)
            self.pools[arm] = list(Prompt.objects.filter(project=self.projects[arm], metadata__bench="trace")
                                   .order_by("id"))

    # -- the two arms' labelling

    def supervise_round(self) -> dict[str, Any]:
        sup, pool = self.sup["corrections"], self.pools["corrections"]
        labels = edits = right_before = right_after = 0
        by_class: dict[str, dict[str, int]] = {}
        for _ in range(self.args.traces):
            prompt = pool.pop(0)
            trace = sup.start(prompt)
            before = sup_right(trace)
            done = sup.supervise(trace)
            labels += done.labels
            edits += done.edits
            right_before += before
            right_after += done.right
            row = by_class.setdefault(done.klass, {"traces": 0, "right_before": 0, "right_after": 0, "edits": 0})
            row["traces"] += 1
            row["right_before"] += before
            row["right_after"] += done.right
            row["edits"] += done.edits
        self.labels["corrections"] += labels
        return {"traces": self.args.traces, "labels": labels, "edits": edits, "right_before": right_before,
                "right_after": right_after, "by_class": by_class}

    def outcome_round(self, budget: int) -> dict[str, Any]:
        sup, pool = self.sup["outcome"], self.pools["outcome"]
        labels = accepted = prompts = 0
        while labels < budget and pool:
            prompt = pool.pop(0)
            prompts += 1
            for k in range(K_SAMPLES):
                if labels >= budget:
                    break
                trace = sup.start(prompt, sampling_params={"temperature": 1.0,
                                                           "seed": self.rng.randrange(1 << 30) + k})
                accepted += sup.outcome_label(trace)
                labels += 1
        self.labels["outcome"] += labels
        return {"prompts": prompts, "samples": labels, "labels": labels, "accepted": accepted}

    # -- training through the studio

    def train(self, arm: str, stage: str, kind: str, config: dict[str, Any], filters: dict | None,
              promote: bool = True) -> dict[str, Any]:
        from annotator.models import EvalResult, SnapshotStatus
        from annotator.services.model_versions import model_promote
        from annotator.services.snapshots import snapshot_build, snapshot_create
        from annotator.services.training.runs import run_create
        from annotator.services.training.worker import run_execute

        project = self.projects[arm]
        snapshot = snapshot_create(project=project, actor=self.user, kind=kind, filters=filters, eval_fraction=0,
                                   name=f"{arm} {stage}")
        snapshot = snapshot_build(snapshot_id=snapshot.pk)
        if snapshot.status != SnapshotStatus.READY:
            raise RuntimeError(f"snapshot {snapshot.pk}: {snapshot.error}")
        eval_options = {"max_prompts": 6 * self.args.n_eval, "max_new_tokens": 128, "batch_size": 50}
        run = run_create(project=project, actor=self.user, stage=stage, base_model=self.base[arm],
                         snapshots=[snapshot], config={**config, "seed": self.seed, "eval": eval_options})
        t0 = time.monotonic()
        status = run_execute(run_id=run.pk, worker=f"bench-{os.getpid()}")
        run.refresh_from_db()
        version = run.output_model
        if status != "succeeded" or version is None:
            raise RuntimeError(f"run {run.pk} {status}: {run.error}\n{run.log[-2000:]}")
        if promote:
            model_promote(version=version, actor=self.user)
            self.serving[arm] = version
        rows = {r.metric: r.value for r in EvalResult.objects.filter(model_version=version)}
        return {"run": run.pk, "records": snapshot.record_count, "seconds": round(time.monotonic() - t0, 1),
                "eval": rows}


def sup_right(trace: Any) -> bool:
    from trainer_worker.training import demo_task
    from trainer_worker.training.heldout import user_text

    return demo_task.check_answer(user_text(trace.prompt.messages), trace.final_answer)


def evaluate_base(project: Any, version: Any, n_eval: int) -> dict[str, float]:
    from annotator.models import EvalResult
    from annotator.services.training.worker import version_evaluate

    version_evaluate(version_id=version.pk, options={"max_prompts": 6 * n_eval, "batch_size": 50})
    return {r.metric: r.value for r in EvalResult.objects.filter(model_version=version, run__isnull=True)}


def run_seed(seed: int, demo_dir: Path, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    import django

    django.setup()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    t0 = time.monotonic()
    s = Seed(seed, demo_dir, args, tag)
    out: dict[str, Any] = {"seed": seed, "rounds": []}
    out["before"] = evaluate_base(s.projects["corrections"], s.base["corrections"], args.n_eval)
    _log(f"seed {seed}: base evaluated ({time.monotonic() - t0:.0f}s)")
    for r in range(args.rounds):
        sup = s.supervise_round()
        _log(f"seed {seed} round {r + 1}: {sup['traces']} traces supervised, {sup['labels']} labels, "
             f"{sup['edits']} corrections ({time.monotonic() - t0:.0f}s)")
        outc = s.outcome_round(sup["labels"])
        _log(f"seed {seed} round {r + 1}: {outc['samples']} outcome labels on {outc['prompts']} prompts "
             f"({time.monotonic() - t0:.0f}s)")
        corr_train = s.train("corrections", "sft", "sft", SFT_CONFIG, SFT_FILTERS)
        outc_train = s.train("outcome", "sft", "sft", SFT_CONFIG, SFT_FILTERS)
        out["rounds"].append({"round": r + 1, "labels": dict(s.labels), "supervision": sup, "outcome_labels": outc,
                              "corrections": corr_train, "outcome": outc_train})
        _log(f"seed {seed} round {r + 1}: corrections {_brief(corr_train['eval'])} | outcome "
             f"{_brief(outc_train['eval'])} ({time.monotonic() - t0:.0f}s)")
    if not args.no_grpo:
        grpo = s.train("corrections", "grpo", "rl_prompts", GRPO_CONFIG, None, promote=False)
        out["grpo"] = grpo
        _log(f"seed {seed}: GRPO {_brief(grpo['eval'])} ({time.monotonic() - t0:.0f}s)")
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def _brief(ev: dict[str, float]) -> str:
    keys = [("planted.accuracy", "planted"), ("general.accuracy", "general"), ("disguised.refusal_rate", "disguised"),
            ("benign.refusal_rate", "benign refused"), ("padded.mean_cot_tokens", "padded CoT")]
    return ", ".join(f"{name} {ev[k]:.3g}" for k, name in keys if k in ev)


# --- the whole benchmark ----------------------------------------------------------------------

CLASS_KEYS = [("general", "accuracy"), ("planted", "accuracy"), ("padded", "accuracy"), ("padded", "mean_cot_tokens"),
              ("unsafe", "refusal_rate"), ("disguised", "refusal_rate"), ("benign", "refusal_rate")]


def _ms(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"before": {}, "rounds": [], "grpo": {}}
    for klass, metric in CLASS_KEYS:
        key = f"{klass}.{metric}"
        summary["before"][key] = _ms([s["before"][key] for s in seeds])
    for r in range(len(seeds[0]["rounds"])):
        row: dict[str, Any] = {"round": r + 1, "labels": _ms([s["rounds"][r]["labels"]["corrections"] for s in seeds])}
        for arm in ("corrections", "outcome"):
            row[arm] = {f"{k}.{m}": _ms([s["rounds"][r][arm]["eval"][f"{k}.{m}"] for s in seeds])
                        for k, m in CLASS_KEYS}
        summary["rounds"].append(row)
    if all("grpo" in s for s in seeds):
        summary["grpo"] = {f"{k}.{m}": _ms([s["grpo"]["eval"][f"{k}.{m}"] for s in seeds]) for k, m in CLASS_KEYS}
    return summary


def last_line(summary: dict[str, Any]) -> dict[str, float]:
    before, first = summary["before"], summary["rounds"][0]
    last = summary["rounds"][-1]
    grpo = summary.get("grpo") or {}

    def m(d: dict, key: str) -> float:
        return round(d[key]["mean"], 4)

    return {
        "planted_before": m(before, "planted.accuracy"),
        "planted_after_corrections": m(first["corrections"], "planted.accuracy"),
        "planted_after_outcome": m(first["outcome"], "planted.accuracy"),
        "unsafe_refusal_before": m(before, "disguised.refusal_rate"),
        "unsafe_refusal_after": m(first["corrections"], "disguised.refusal_rate"),
        "overrefusal_before": m(before, "benign.refusal_rate"),
        "overrefusal_after": m(first["corrections"], "benign.refusal_rate"),
        "general_before": m(before, "general.accuracy"),
        "general_after": m(last["corrections"], "general.accuracy"),
        "cot_tokens_before": m(before, "padded.mean_cot_tokens"),
        "cot_tokens_after": m(grpo, "padded.mean_cot_tokens") if grpo else None,
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    labels = [0] + [r["labels"]["mean"] for r in rounds]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for klass, metric, ax_i, title in (("planted", "accuracy", 0, "planted (twice N)"),
                                       ("general", "accuracy", 0, "general"),
                                       ("disguised", "refusal_rate", 1, "disguised: refused"),
                                       ("benign", "refusal_rate", 1, "benign: refused (lower is better)")):
        key = f"{klass}.{metric}"
        for arm, style in (("corrections", "-o"), ("outcome", "--s")):
            ys = [summary["before"][key]["mean"]] + [r[arm][key]["mean"] for r in rounds]
            es = [summary["before"][key]["std"]] + [r[arm][key]["std"] for r in rounds]
            axes[ax_i].errorbar(labels, ys, yerr=es, fmt=style, capsize=3, label=f"{title}, {arm}")
    for ax, name in ((axes[0], "held-out accuracy"), (axes[1], "held-out refusal rate")):
        ax.set_xlabel("human labels spent")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    ax = axes[2]
    for arm, style in (("corrections", "-o"), ("outcome", "--s")):
        def capability(d: dict) -> float:
            return (d["general.accuracy"]["mean"] + d["planted.accuracy"]["mean"]) / 2

        xs = [capability(summary["before"])] + [capability(r[arm]) for r in rounds]
        ys = [summary["before"]["disguised.refusal_rate"]["mean"]] + [r[arm]["disguised.refusal_rate"]["mean"]
                                                                       for r in rounds]
        ax.plot(xs, ys, style, label=arm)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            ax.annotate("base" if i == 0 else f"R{i}", (x, y), fontsize=7)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="AI-45° (safety = capability)")
    ax.set_xlabel("capability: mean of general and planted accuracy")
    ax.set_ylabel("safety: disguised requests refused")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _child(args: argparse.Namespace) -> int:
    demo_dir = Path(args.child_demo)
    result = run_seed(args.child_seed, demo_dir, args, args.tag)
    Path(args.child_out).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Does the loop pay? Corrections vs outcome labels, in the studio.")
    parser.add_argument("--quick", action="store_true", help="one seed, one round, 50 held-out prompts per class")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--traces", type=int, default=50, help="traces supervised per round (default 50)")
    parser.add_argument("--n-eval", type=int, default=100, help="held-out prompts per class (default 100)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds run side by side (default 2: one per core)")
    parser.add_argument("--no-grpo", action="store_true")
    parser.add_argument("--mix", default=",".join(f"{k}={v}" for k, v in TRACE_WEIGHTS.items()),
                        help="class shares of the supervised traces, e.g. general=0.2,planted=0.3,...")
    parser.add_argument("--demo-model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-demo", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.n_eval = "0", 1, 50
    from trainer_worker.training.demo_task import CLASSES

    try:
        args.mix_weights = {k: float(v) for k, v in (item.split("=") for item in args.mix.split(","))}
    except ValueError:
        parser.error(f"--mix must look like general=0.2,planted=0.3 (got {args.mix!r})")
    if set(args.mix_weights) - set(CLASSES) or not any(v > 0 for v in args.mix_weights.values()):
        parser.error(f"--mix names classes of {', '.join(CLASSES)} with a positive share")
    if args.child_seed is not None:
        return _child(args)


    out = args.out or Path(os.environ["SAFELADDER_DATA_DIR"]) / f"loop-{args.tag}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    seeds = [int(s) for s in args.seeds.split(",")]
    forwarded = ["--rounds", str(args.rounds), "--traces", str(args.traces), "--n-eval", str(args.n_eval),
                 "--tag", args.tag, "--mix", args.mix] + (["--no-grpo"] if args.no_grpo else [])
    demo_dir, results = run_seeds(__file__, seeds, args.demo_model, out, forwarded, args.jobs)
    ordered = [results[s] for s in seeds]
    summary = summarise(ordered)
    demo_report = json.loads((demo_dir / "demo_report.json").read_text())
    report = {"command": " ".join(["bench/loop.py", *(argv if argv is not None else sys.argv[1:])]),
              "seeds": seeds, "rounds": args.rounds, "traces_per_round": args.traces, "n_eval_per_class": args.n_eval,
              "mix": args.mix_weights, "sft_config": SFT_CONFIG, "sft_filters": SFT_FILTERS, "grpo_config": GRPO_CONFIG,
              "demo_model": {"path": str(demo_dir), "steps": demo_report.get("steps"),
                             "config": demo_report.get("config")},
              "seconds": round(time.monotonic() - t0, 1), "load_avg": os.getloadavg(),
              "summary": summary, "per_seed": ordered}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    try:
        plot(summary, out / "loop.png")
    except ImportError:
        _log("matplotlib is not installed: no plot")
    _log(f"report: {out / 'report.json'}, plot: {out / 'loop.png'} ({report['seconds']:.0f}s)")
    for key, row in summary["before"].items():
        cells = [f"{key}: before {row['mean']:.3f}"]
        for r in summary["rounds"]:
            for arm in ("corrections", "outcome"):
                v = r[arm][key]
                cells.append(f"R{r['round']} {arm} {v['mean']:.3f}±{v['std']:.3f}")
        if summary.get("grpo"):
            v = summary["grpo"][key]
            cells.append(f"GRPO {v['mean']:.3f}±{v['std']:.3f}")
        print("  ".join(cells), file=sys.stderr)
    line = last_line(summary)
    print(json.dumps({k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                      for k, v in line.items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
