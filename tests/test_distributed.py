"""Multi-process data parallelism: two local processes (one CPU device each, gloo collectives)
train like one process with two devices; bad distributed input ends with one line, exit 2."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from crl_distill.cli import main
from crl_distill.launch import free_port, launch

# One tiny epoch pair; replay capacity and prefill come from the CPU preset.
TINY_ARGS = ["--env", "pointmaze_u", "--depth", "4", "--width", "64", "--num-envs", "16",
             "--unroll-length", "10", "--batch-size", "32", "--updates-per-iter", "5",
             "--iters-per-epoch", "2", "--epochs", "2", "--num-eval-envs", "8", "--no-progress",
             "--logger", "none"]
CLI = [sys.executable, "-m", "crl_distill"]


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    # The reference runs beside the two processes: most of the time is compiling.
    one = subprocess.Popen(CLI + ["teacher", *TINY_ARGS, "--out", str(root / "one")], env=_env(2),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    code = launch(CLI + ["teacher", "--distributed", *TINY_ARGS, "--out", str(root / "two")], 2,
                  env=_env(1))
    _, err = one.communicate(timeout=600)
    assert one.returncode == 0, err[-2000:]
    assert code == 0
    return root / "one", root / "two"


def test_two_processes_train_like_one_process_with_two_devices(runs):
    one, two = runs
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    assert len(json.loads((one / "config.json").read_text())["devices"]) == 2
    a, b = _rows(one), _rows(two)
    assert [r["epoch"] for r in b] == [0, 1]
    for ra, rb in zip(a, b, strict=True):
        assert ra["env_steps"] == rb["env_steps"] and ra["sgd_steps"] == rb["sgd_steps"]
        for k in ("critic_loss", "actor_loss", "alpha", "accuracy", "entropy"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-3, abs=1e-4), k
    # Each process wrote its own share of the replay buffer (last epoch: always saved).
    names = sorted(p.name for p in (two / "checkpoints").glob("replay-000002-*.npz"))
    assert names == ["replay-000002-p0of2.npz", "replay-000002-p1of2.npz"]


def test_two_process_checkpoint_loads_in_one_process(runs):
    from crl_distill.teacher import load_teacher

    one, two = runs
    t1, t2 = load_teacher(one), load_teacher(two)
    obs = np.zeros((3, t1.env.observation_size), np.float32)
    assert t2.epoch == 2
    np.testing.assert_allclose(np.asarray(t2.act(obs)), np.asarray(t1.act(obs)), atol=1e-3)


@pytest.mark.slow  # another two-process compile (~40-80 s here); kill_resume.py --processes 2 too
def test_two_process_resume_continues_from_the_last_epoch(runs, tmp_path):
    """Drop the last epoch's files (a kill during epoch 2), resume with 2 processes: same rows."""
    import shutil

    _, two = runs
    run = tmp_path / "two"
    shutil.copytree(two, run)
    for p in (run / "checkpoints").glob("*000002*"):
        p.unlink()
    code = launch(CLI + ["teacher", "--distributed", "--no-progress", "--logger", "none",
                         "--resume", str(run)], 2, env=_env(1))
    assert code == 0
    assert (run / "metrics.jsonl").read_bytes() == (two / "metrics.jsonl").read_bytes()


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--coordinator", "127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
      "--distributed-timeout", "1"], "unreachable"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["--coordinator", "127.0.0.1:{port}", "--num-processes", "2", "--process-id", "2"],
     "process-id 2"),
    (["--coordinator", "127.0.0.1:{port}", "--num-processes", "2"], "CRL_DISTILL_PROCESS_ID"),
])
def test_bad_distributed_settings_give_one_line_and_exit_2(extra, message, capsys, monkeypatch,
                                                           tmp_path):
    for var in ("CRL_DISTILL_COORDINATOR", "CRL_DISTILL_NUM_PROCESSES", "CRL_DISTILL_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    port = str(free_port())  # nothing listens there
    argv = ["teacher", "--distributed", *[a.replace("{port}", port) for a in extra],
            "--out", str(tmp_path / "run")]
    t0 = time.perf_counter()
    code, err = _cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err and time.perf_counter() - t0 < 30
    assert not (tmp_path / "run").exists()


def test_num_envs_not_divisible_by_devices_is_one_line_exit_2(tmp_path):
    args = [a if a != "16" else "15" for a in TINY_ARGS]
    res = subprocess.run(CLI + ["teacher", *args, "--out", str(tmp_path / "run")], env=_env(2),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "divisible" in res.stderr and "Traceback" not in res.stderr


def test_launcher_stops_the_others_when_one_process_fails():
    child = ("import os, sys, time\n"
             "sys.exit(3) if os.environ['CRL_DISTILL_PROCESS_ID'] == '1' else time.sleep(120)")
    t0 = time.perf_counter()
    assert launch([sys.executable, "-c", child], 2) == 3
    assert time.perf_counter() - t0 < 60
