"""Benchmark: triage vs arrival order. Within a budget of 50 reviewed traces, how many wrong traces
does the review queue's triage order put in front of a supervisor, against arrival order?

    .venv/bin/python bench/triage.py                  # seeds 0,1,2 (about 10 minutes on 2 cores)
    .venv/bin/python bench/triage.py --seeds 0 --train 40 --traces 80   # a smoke run

Everything goes through the studio on a real PostgreSQL and Valkey (embedded ones under
``.data/bench`` when no DATABASE_URL / REDIS_URL is set). Per seed, in a process of its own:

1. Two projects serve the demo model (``make run`` builds it; built here otherwise) with the demo
   project's generation defaults (greedy, 160 new tokens). Their prompts are distinct training
   prompts of the demo task drawn with the task's own class mix (``demo_task.CLASS_WEIGHTS``); no
   prompt is in both.
2. **Supervision project:** the simulated supervisor (``annotator.simulation``) works ``--train``
   traces as a person in the review screen would: it rates each step by the rule checker's
   judgement, corrects the first wrong step, lets the model continue (at most 3 edits) and gives a
   verdict. A ``stepwise`` snapshot of those labels trains a PRM with the studio's stage ``prm``,
   run by the train worker's own code (``run_execute``, in this process).
3. **Triage project:** the PRM is registered there as a model version and set as the project's
   scorer (``supervision.scorers = ["prm:<id>"]``); ``--traces`` new traces of the demo model are
   generated through the generate worker's code (``trace_generate``), so the PRM scores every
   closed step live, as in the product. None of these traces was used to train the PRM.
4. **Orders:** the first ``--budget`` traces of ``selectors.queue_list`` (the queue endpoint's own
   selector) in ``arrival``, ``lowest_score`` and ``confident_wrong`` order. Then a second PRM
   (same snapshot, another training seed) scores the same steps through the studio's scorer
   (``supervision.Scorers``) and ``disagreement`` (the spread between the two PRMs) is measured.
5. **Wrong trace:** its final answer is wrong by the demo task's checker (``check_answer``, the
   held-out evaluation's check), or any step is rated -1 by the rule checker (``judge_steps``).
   The rule checker only judges; it is never a scorer here (as a scorer it would be the reference
   itself). The upper bound is every reviewed trace wrong: min(budget, wrong traces).

Prints one line per seed and a summary (mean ± std over seeds, the ratio of the means); the last
line is one JSON object. ``report.json`` goes under ``--out`` (default .data/bench/triage-<time>).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from seeds import run_seeds  # noqa: E402  (bench/seeds.py, beside this script)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("SAFELADDER_DATA_DIR", str(ROOT / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Queues of the bench's own: a studio's workers on the same Redis must not take its runs or traces.
os.environ.setdefault("CELERY_TRAIN_QUEUE", "bench-triage-train")
os.environ.setdefault("CELERY_GENERATE_QUEUE", "bench-triage-generate")

GENERATION = {"temperature": 0.0, "max_new_tokens": 160}  # the demo project's defaults (annotator/demo.py)
PRM_CONFIG = {"learning_rate": 2e-4, "num_train_epochs": 10, "per_device_batch_size": 8, "max_length": 256,
              "save_steps": 100000, "logging_steps": 10}
ORDERS = ("arrival", "lowest_score", "confident_wrong", "disagreement")


def _log(msg: str) -> None:
    print(f"[triage {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _project(user: Any, name: str, base_dir: Path) -> tuple[Any, Any]:
    from annotator.models import ModelVersion
    from annotator.services.projects import project_create

    project = project_create(owner=user, name=name, generation_defaults=GENERATION)
    base = ModelVersion.objects.create(project=project, name="demo", base_model=str(base_dir), path=str(base_dir),
                                       backend="local")
    project.serving_model = base
    project.save(update_fields=["serving_model"])
    return project, base


def _prompts(project: Any, user: Any, problems: list[Any]) -> list[Any]:
    from annotator.models import Prompt

    rows = [Prompt(project=project, messages=[{"role": "user", "content": p.prompt}], category=p.category,
                   reference_answer=p.answer if p.category == "knowledge" else "",
                   metadata={"source": "demo_task", "klass": p.klass, "split": "train"}, created_by=user)
            for p in problems]
    Prompt.objects.bulk_create(rows)
    return list(Prompt.objects.filter(project=project).order_by("id"))


def _train_prm(project: Any, user: Any, base: Any, snapshot: Any, seed: int) -> tuple[Any, float]:
    from annotator.services.training.runs import run_create
    from annotator.services.training.worker import run_execute

    run = run_create(project=project, actor=user, stage="prm", base_model=base, snapshots=[snapshot],
                     config={**PRM_CONFIG, "seed": seed})
    t0 = time.monotonic()
    status = run_execute(run_id=run.pk, worker=f"bench-{os.getpid()}")
    run.refresh_from_db()
    if status != "succeeded" or run.output_model is None:
        raise RuntimeError(f"PRM run {run.pk} {status}: {run.error}\n{run.log[-2000:]}")
    return run.output_model, time.monotonic() - t0


def _register(project: Any, user: Any, prm: Any, name: str) -> Any:
    from annotator.services.model_versions import model_version_create

    return model_version_create(project=project, actor=user, name=name, base_model=prm.base_model, path=prm.path,
                                backend="local", notes=f"PRM trained in project {prm.project_id} (run output)")


def _auc(wrong_scores: list[float], right_scores: list[float]) -> float | None:
    """P(a wrong trace's score < a right trace's): how well a score separates them (0.5 = chance)."""
    if not wrong_scores or not right_scores:
        return None
    wins = sum((w < r) + 0.5 * (w == r) for w in wrong_scores for r in right_scores)
    return wins / (len(wrong_scores) * len(right_scores))


def run_seed(seed: int, demo_dir: Path, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    import random

    import django

    django.setup()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    from django.contrib.auth import get_user_model
    from django.db.models import Min

    from annotator import selectors
    from annotator.models import SnapshotStatus, StepScore, Trace
    from annotator.services.projects import project_update
    from annotator.services.snapshots import snapshot_build, snapshot_create
    from annotator.simulation import StudioSupervisor
    from annotator.supervision import Scorers
    from trainer_worker.training import demo_task
    from trainer_worker.training.heldout import user_text

    t0 = time.monotonic()
    user, _ = get_user_model().objects.get_or_create(username="bench-triage")
    problems = demo_task.make_problems(args.train + args.traces, seed=7000 + seed, split="train", distinct=True)
    random.Random(seed).shuffle(problems)
    train_problems, triage_problems = problems[:args.train], problems[args.train:]

    # 1-2. Supervised traces, a stepwise snapshot of their labels, the PRM.
    sup_project, sup_base = _project(user, f"triage {tag} seed {seed}: supervision", demo_dir)
    supervisor = StudioSupervisor(sup_project, user)
    edits = 0
    for prompt in _prompts(sup_project, user, train_problems):
        edits += supervisor.supervise(supervisor.start(prompt)).edits
    _log(f"seed {seed}: {args.train} traces supervised, {edits} corrections ({time.monotonic() - t0:.0f}s)")
    snapshot = snapshot_build(snapshot_id=snapshot_create(project=sup_project, actor=user, kind="stepwise",
                                                          filters=None, eval_fraction=0, name="PRM labels").pk)
    if snapshot.status != SnapshotStatus.READY:
        raise RuntimeError(f"snapshot {snapshot.pk}: {snapshot.error}")
    prm, prm_s = _train_prm(sup_project, user, sup_base, snapshot, seed)
    _log(f"seed {seed}: PRM trained on {snapshot.record_count} stepwise records in {prm_s:.0f}s")

    # 3. The triage project: new traces, scored live by the PRM.
    triage_project, _ = _project(user, f"triage {tag} seed {seed}: triage", demo_dir)
    scorer = _register(triage_project, user, prm, "prm")
    project_update(project=triage_project, actor=user,
                   supervision={"mode": "live", "scorers": [f"prm:{scorer.pk}"], "pause_below": None})
    triage_project.refresh_from_db()
    generator = StudioSupervisor(triage_project, user)
    for prompt in _prompts(triage_project, user, triage_problems):
        generator.start(prompt)
    _log(f"seed {seed}: {args.traces} traces generated and scored ({time.monotonic() - t0:.0f}s)")

    # The reference judgement of every triage trace (the rule checker: it judges, it never scores).
    truth: dict[int, dict[str, Any]] = {}
    for trace in Trace.objects.filter(project=triage_project).select_related("prompt").prefetch_related("steps"):
        text = user_text(trace.prompt.messages)
        steps = [s.text for s in sorted(trace.steps.all(), key=lambda s: s.index)]
        answer_wrong = not demo_task.check_answer(text, trace.final_answer)
        step_wrong = -1 in demo_task.judge_steps(text, steps)
        truth[trace.pk] = {"wrong": answer_wrong or step_wrong, "answer_wrong": answer_wrong,
                           "klass": demo_task.klass_of(text), "steps": steps, "messages": trace.prompt.messages}
    n_wrong = sum(t["wrong"] for t in truth.values())
    n_answer_wrong = sum(t["answer_wrong"] for t in truth.values())

    def found(order: str) -> dict[str, Any]:
        ids = list(selectors.queue_list(triage_project, user, order=order).values_list("id", flat=True)[:args.budget])
        return {"wrong": sum(truth[i]["wrong"] for i in ids),
                "answer_wrong": sum(truth[i]["answer_wrong"] for i in ids)}

    result: dict[str, Any] = {"seed": seed, "traces": len(truth), "wrong": n_wrong, "answer_wrong": n_answer_wrong,
                              "train_traces": args.train, "corrections": edits,
                              "stepwise_records": snapshot.record_count, "prm_train_s": round(prm_s, 1),
                              "budget": args.budget, "found": {}}
    for order in ("arrival", "lowest_score", "confident_wrong"):
        result["found"][order] = found(order)
    lowest = dict(StepScore.objects.filter(trace__project=triage_project).values("trace_id")
                  .annotate(m=Min("score")).values_list("trace_id", "m"))
    result["prm_auc"] = _auc([lowest[i] for i, t in truth.items() if t["wrong"] and i in lowest],
                             [lowest[i] for i, t in truth.items() if not t["wrong"] and i in lowest])

    # 4. A second PRM (same labels, another seed) scores the same steps: the scorers' disagreement.
    prm_b, _ = _train_prm(sup_project, user, sup_base, snapshot, seed + 1000)
    scorer_b = _register(triage_project, user, prm_b, "prm-b")
    rows = []
    for trace_id, t in truth.items():
        scorers = Scorers((f"prm:{scorer_b.pk}",), t["messages"])
        step_ids = dict(Trace.objects.get(pk=trace_id).steps.values_list("index", "id"))
        for i in range(len(t["steps"])):
            for sc in scorers.score(t["steps"][:i + 1]):
                rows.append(StepScore(trace_id=trace_id, step_id=step_ids[i], step_index=i, scorer=sc.scorer,
                                      model_version_id=sc.model_version_id, score=sc.score, detail=sc.detail))
    StepScore.objects.bulk_create(rows)
    result["found"]["disagreement"] = found("disagreement")
    result["upper_bound"] = min(args.budget, n_wrong)
    result["by_class"] = {k: {"traces": sum(t["klass"] == k for t in truth.values()),
                              "wrong": sum(t["klass"] == k and t["wrong"] for t in truth.values())}
                          for k in demo_task.CLASSES}
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


# --- the whole benchmark ----------------------------------------------------------------------


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"orders": {}}
    arrival = [s["found"]["arrival"]["wrong"] for s in seeds]
    for order in ORDERS:
        values = [s["found"][order]["wrong"] for s in seeds]
        mean, std = _ms(values)
        row = {"mean": mean, "std": std, "values": values,
               "answer_wrong": _ms([s["found"][order]["answer_wrong"] for s in seeds])[0]}
        if order != "arrival":
            row["ratio"] = mean / statistics.fmean(arrival) if statistics.fmean(arrival) else None
            row["ratio_per_seed"] = [v / a if a else None for v, a in zip(values, arrival, strict=True)]
        summary["orders"][order] = row
    summary["upper_bound"] = dict(zip(("mean", "std"), _ms([s["upper_bound"] for s in seeds]), strict=True))
    summary["wrong_share"] = statistics.fmean(s["wrong"] / s["traces"] for s in seeds)
    summary["prm_auc"] = _ms([s["prm_auc"] for s in seeds if s["prm_auc"] is not None])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Triage vs arrival order: wrong traces found per budget.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=120, help="supervised traces the PRM learns from (default 120)")
    parser.add_argument("--traces", type=int, default=300, help="traces to triage (default 300)")
    parser.add_argument("--budget", type=int, default=50, help="traces a supervisor reviews (default 50)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds run side by side (default 2: one per core)")
    parser.add_argument("--demo-model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-demo", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_seed is not None:
        result = run_seed(args.child_seed, Path(args.child_demo), args, args.tag)
        Path(args.child_out).write_text(json.dumps(result))
        return 0


    out = args.out or Path(os.environ["SAFELADDER_DATA_DIR"]) / f"triage-{args.tag}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    seeds = [int(s) for s in args.seeds.split(",")]
    forwarded = ["--train", str(args.train), "--traces", str(args.traces), "--budget", str(args.budget),
                 "--tag", args.tag]
    _, results = run_seeds(__file__, seeds, args.demo_model, out, forwarded, args.jobs)
    ordered = [results[s] for s in seeds]
    summary = summarise(ordered)
    report = {"command": " ".join(["bench/triage.py", *(argv if argv is not None else sys.argv[1:])]),
              "seeds": seeds, "prm_config": PRM_CONFIG, "generation": GENERATION,
              "seconds": round(time.monotonic() - t0, 1), "load_avg": os.getloadavg(),
              "summary": summary, "per_seed": ordered}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    for s in ordered:
        cells = ", ".join(f"{o} {s['found'][o]['wrong']}" for o in ORDERS)
        print(f"seed {s['seed']}: {s['traces']} traces, {s['wrong']} wrong ({s['answer_wrong']} by the answer); "
              f"wrong in the first {s['budget']}: {cells}; upper bound {s['upper_bound']}; "
              f"PRM AUC {s['prm_auc']:.3f}; {s['seconds']:.0f}s", file=sys.stderr)
    for order, row in summary["orders"].items():
        ratio = f", ratio to arrival {row['ratio']:.2f}" if row.get("ratio") else ""
        print(f"{order:>16}: {row['mean']:.1f} ± {row['std']:.1f} wrong of {args.budget}{ratio}", file=sys.stderr)
    ub = summary["upper_bound"]
    print(f"{'upper bound':>16}: {ub['mean']:.1f} ± {ub['std']:.1f} (every reviewed trace wrong); "
          f"{report['seconds']:.0f}s; report {out / 'report.json'}", file=sys.stderr)
    print(json.dumps({o: {"mean": round(r["mean"], 2), "std": round(r["std"], 2),
                          **({"ratio": round(r["ratio"], 3)} if r.get("ratio") else {})}
                      for o, r in summary["orders"].items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
