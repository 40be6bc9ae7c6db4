import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer_worker.training.demo_model import REPORT_FILE, build_demo_model, format_ok, generate, main
from trainer_worker.training.demo_task import make_problems
from trainer_worker.vocabulary.format import THINK_OPEN

# A fixed step count (as the real build): the same amount of learning on every machine.
STEPS = 60


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    events = []
    report = build_demo_model(out, max_steps=STEPS, seed=0, progress=events.append, n_eval=5)
    return out, report, events


def test_short_build_reports_progress_and_learns(built):
    _, report, events = built
    assert events, "progress was never called"
    assert all({"step", "total", "loss", "elapsed"} <= set(e) for e in events)
    steps = [e["step"] for e in events]
    assert steps == sorted(steps) and steps[-1] == report.steps == STEPS
    assert events[-1]["total"] == report.steps
    # Sixty steps already cut the loss far below its random-init value (~ln 514 = 6.2).
    assert events[-1]["loss"] < events[0]["loss"] - 2.0
    assert 100_000 < report.params < 3_000_000


def test_report_file_has_the_figures(built):
    out, report, _ = built
    data = json.loads((out / REPORT_FILE).read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    # Every class of the demo task is evaluated on its own held-out prompts (5 each here).
    assert set(data["classes"]) == {"general", "planted", "padded", "unsafe", "disguised", "benign"}
    assert data["n_eval"] == 30 == sum(row["n"] for row in data["classes"].values())
    for row in data["classes"].values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["refusal_rate"] <= 1.0 and row["mean_cot_tokens"] > 0
    for key in ("accuracy", "refusal_rate", "format_rate"):
        assert 0.0 <= data[key] <= 1.0
    assert data["config"]["task_version"] == 2 and data["config"]["max_steps"] == STEPS
    assert data["samples"] and data["samples"][0]["completion"] and data["samples"][0]["klass"]


def test_saved_model_reloads_and_keeps_the_format(built):
    out, report, _ = built
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    # The reloaded model answers exactly as the one that was evaluated: ids and weights survived.
    sample = report.samples[0]
    assert generate(model, tokenizer, [sample["prompt"]]) == [sample["completion"]]
    # Plain generate() with the saved generation config (no arguments) starts the chain of thought.
    prompt = make_problems(1, seed=5)[0].prompt
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out_ids = model.generate(**ids)
    text = tokenizer.decode(out_ids[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.startswith(THINK_OPEN)


def test_format_ok():
    assert format_ok("<think>\n1. 2 + 2 = 4\n</think>\n4")
    assert not format_ok("<think>\n1. 2 + 2 = 4\n")
    assert not format_ok("4")
    assert not format_ok("<think>\n</think>\n4")
    assert not format_ok("<think>\n1. 2 + 2 = 4\n</think>\n")


def test_cli_prints_the_report(tmp_path, capsys):
    assert main([str(tmp_path / "m"), "--steps", "3", "--n-eval", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_eval"] == 12 and printed["steps"] == 3
    assert (tmp_path / "m" / REPORT_FILE).exists()
