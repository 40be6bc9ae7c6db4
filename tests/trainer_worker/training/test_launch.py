"""launch: how many processes a stage asks for, the accelerate command line, and a stage whose ranks
raise (the run's error names the rank and its reason; nothing is left running)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer_worker.training import launch
from trainer_worker.training.config import ConfigError, StageConfig
from trainer_worker.training.tiny import build_tiny_lm


def _config(tmp_path: Path, **kw) -> StageConfig:
    base = tmp_path / "model"
    base.mkdir(exist_ok=True)
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    return StageConfig(stage="sft", base_model_path=str(base), output_dir=str(tmp_path / "out"),
                       dataset_path=str(data), **kw)


@pytest.mark.parametrize("value", [0, 65, -1, "2", True, 1e30, 2.0])
def test_num_processes_must_be_an_integer_from_1_to_64(tmp_path: Path, value) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, num_processes=value).validate()
    assert caught.value.problems == [f"num_processes must be an integer from 1 to 64 (got {value!r})"]


def test_num_processes_given_or_one_per_gpu(tmp_path: Path) -> None:
    assert launch.num_processes(_config(tmp_path, num_processes=3).validate()) == 3
    # Unset: one per GPU; this machine has none, so one process (no launch at all).
    assert not launch.cuda_available()
    assert launch.num_processes(_config(tmp_path).validate()) == 1


def test_command_line_single_machine_and_with_a_config_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    cmd = launch.launch_command(spec, 2, 29611)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    flags = " ".join(cmd[3:])
    assert "--multi_gpu --num_processes 2 --num_machines 1 --machine_rank 0 --main_process_port 29611" in flags
    assert cmd[-3:] == ["-m", "trainer_worker.training.launch", str(spec)]
    # A config file (DeepSpeed, FSDP, several machines) says the distributed type itself.
    cmd = launch.launch_command(spec, 8, 29611, accelerate_config="/etc/accelerate/ds.yaml")
    assert cmd[3:7] == ["--config_file", "/etc/accelerate/ds.yaml", "--num_processes", "8"]
    assert "--multi_gpu" not in cmd and "--main_process_port" not in cmd
    env = launch.launch_env(2)
    assert str(Path(launch.__file__).resolve().parents[2]) in env["PYTHONPATH"].split(":")
    assert int(env["OMP_NUM_THREADS"]) >= 1


@pytest.mark.slow
def test_ranks_that_raise_fail_the_stage_with_the_first_reason(tmp_path: Path) -> None:
    base = build_tiny_lm(tmp_path / "base", hidden_size=32, layers=1, heads=2)
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(8)))  # no SFT columns
    config = StageConfig(stage="sft", base_model_path=str(base), output_dir=str(tmp_path / "out"),
                         dataset_path=str(data), max_steps=2, per_device_batch_size=2, num_processes=2)
    lines: list[str] = []
    with pytest.raises(launch.LaunchError) as caught:
        launch.train(config, on_log=lines.append)
    message = str(caught.value)
    assert message.startswith(("rank 0 of 2 failed: ValueError:", "rank 1 of 2 failed: ValueError:")), message
    assert "an SFT dataset needs a 'messages' column" in message
    assert lines[0].startswith("Launching 2 processes: accelerate launch --multi_gpu --num_processes 2")
    # Each rank wrote its reason, with the traceback, beside the launcher's output.
    folder = tmp_path / "out" / "launch"
    assert {p.name for p in folder.glob("rank-*.error")} == {"rank-0.error", "rank-1.error"}
    assert "Traceback" in (folder / "rank-0.error").read_text()
    assert not (folder / "result.json").exists()
