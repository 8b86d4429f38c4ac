"""Live loggers mirror metrics.jsonl: TensorBoard event files read back with TensorBoard's own
reader, a resumed run without duplicated steps, W&B offline summaries, and clear errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from crl_distill.errors import CrlDistillError
from crl_distill.fileio import read_jsonl
from crl_distill.loggers import check_logger, make_logger
from crl_distill.teacher import configure, train_teacher

TINY = dict(depth=0, width=32, num_envs=8, unroll_length=10, batch_size=32, updates_per_iter=4,
            iters_per_epoch=2, replay_capacity=60, prefill_steps=20, num_eval_envs=8)


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_mirrors_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    res = train_teacher(configure("pointmaze_u", epochs=2, **TINY), run, progress=False,
                        logger="tensorboard")
    events = _events(run)
    rows = read_jsonl(run / "metrics.jsonl")
    assert len(rows) == 2 == len(res.metrics)
    for key in ("critic_loss", "actor_loss", "entropy", "alpha", "eval/success_any",
                "eval/time_at_goal", "sgd_steps"):
        assert [s for s, _ in events[key]] == [r["env_steps"] for r in rows], key
        for (_, v), r in zip(events[key], rows, strict=True):
            assert v == pytest.approx(r[key], rel=1e-6, abs=1e-6), key
    timing = read_jsonl(run / "timing.jsonl")
    assert [v for _, v in events["sps"]] == pytest.approx([t["sps"] for t in timing], rel=1e-6)


def test_resume_after_a_kill_leaves_no_duplicated_step(tmp_path):
    run = tmp_path / "run"
    cfg = configure("pointmaze_u", epochs=4, **TINY)
    script = (
        "import sys, time\n"
        "from crl_distill.teacher import train_teacher, TeacherConfig\n"
        "import json\n"
        f"cfg = TeacherConfig.from_dict(json.loads({json.dumps(json.dumps(cfg.to_dict()))}))\n"
        "def slow(row):\n"
        "    print('EPOCH', row['epoch'], flush=True)\n"
        "    time.sleep(30 if row['epoch'] >= 1 else 0)\n"
        f"train_teacher(cfg, {str(run)!r}, progress=False, logger='tensorboard', on_epoch=slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    for line in proc.stdout:
        if line.startswith("EPOCH 1"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    train_teacher(None, run, resume=True, progress=False, logger="tensorboard")
    rows = read_jsonl(run / "metrics.jsonl")
    steps = [s for s, _ in _events(run)["critic_loss"]]
    assert steps == sorted(set(steps)) == [r["env_steps"] for r in rows]
    assert len(rows) == 4


def test_wandb_offline_run_records_the_same_scalars(tmp_path, monkeypatch):
    """A real offline W&B run; wandb >= 0.19 keeps an offline run's history and summary in its
    run-*.wandb record file (files/wandb-summary.json appears on `wandb sync`)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train_teacher(configure("pointmaze_u", epochs=1, **TINY), run, progress=False,
                  logger="wandb", logger_options={"project": "crl-test"})
    records = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1
    data = records[0].read_bytes()
    for key in ("critic_loss", "eval/success_any", "eval/time_at_goal", "entropy", "sps"):
        assert key.encode() in data, key


def test_wandb_logger_mirrors_rows_and_resumes_the_same_run(tmp_path, monkeypatch):
    """The W&B calls themselves, against a stand-in module: names, steps, config, run id."""
    calls = []

    class FakeRun:
        def log(self, row, step):
            calls.append(("log", row, step))

        def finish(self):
            calls.append(("finish",))

    fake = type(sys)("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    logger = make_logger("wandb", run, {"teacher": {"env": "pointmaze_u", "depth": [4]}},
                         project="p", name="n")
    logger.log({"critic_loss": 0.5, "eval": {"success_any": 0.25}, "flag": True,
                "bad": float("nan"), "note": "text"}, step=320)
    logger.close()
    init = calls[0][1]
    assert (init["project"], init["name"], init["resume"]) == ("p", "n", "allow")
    assert init["config"] == {"teacher.env": "pointmaze_u", "teacher.depth": "[4]"}
    # numbers only, nested names joined with '/', NaN dropped, env steps as the step
    assert calls[1] == ("log", {"critic_loss": 0.5, "eval/success_any": 0.25}, 320)
    assert calls[-1] == ("finish",)
    calls.clear()
    make_logger("wandb", run, {}, start_step=320).close()
    assert calls[0][1]["id"] == init["id"]  # a resume continues the same W&B run


def test_unknown_logger_and_missing_wandb_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(CrlDistillError, match="logger"):
        check_logger("mlflow")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(CrlDistillError, match=r"pip install 'crl-distill\[wandb\]'"):
        check_logger("wandb")
    with pytest.raises(CrlDistillError, match="logger"):
        train_teacher(configure("pointmaze_u", epochs=1, **TINY), tmp_path / "r", progress=False,
                      logger="wandb")
    assert not (tmp_path / "r").exists()
    make_logger("none", tmp_path, {}).log({"a": 1.0}, step=0)  # the null logger accepts rows


def test_distillation_logs_each_iteration_and_the_result(tmp_path):
    import helpers

    from crl_distill.distill import DistillConfig, distill

    cfg = DistillConfig(iterations=2, num_envs=8, steps_per_iter=10, sgd_steps_per_iter=5,
                        batch_size=16, eval_episodes=4)
    res = distill(helpers.fixed_teacher(), students="1x8", config=cfg, progress=False,
                  out=tmp_path / "s", logger="tensorboard")
    events = _events(tmp_path / "s")
    history = res.report["students"][0]["history"]
    assert [s for s, _ in events["1x8/loss/action"]] == [0, 1]
    assert [v for _, v in events["1x8/loss/action"]] == pytest.approx(
        [h["loss/action"] for h in history], rel=1e-6)
    assert [v for _, v in events["1x8/beta"]] == pytest.approx([1.0, 0.5])
    assert events["1x8/retention"][0][0] == 2
    assert "teacher/eval/success_any" in events
