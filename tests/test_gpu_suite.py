"""benchmarks/gpu_suite.py: step order, the budget (plan, skip, partial rows), resuming, the
learning plan, the wheelhouse's checks and the device command; and a CPU smoke run."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
import gpu_suite  # noqa: E402
import wheelhouse  # noqa: E402


def test_steps_in_priority_order_with_the_gpu_settings():
    todo = gpu_suite.steps(smoke=False)
    assert [s["name"] for s in todo] == ["throughput-ant-d4", "deep-ant-d64", "deep-ant-d256",
                                         "deep-ant-d1000", "learn-ant-d64", "learn-ant-d4"]
    by = {s["name"]: s for s in todo}
    assert by["deep-ant-d1000"]["remat"] and by["deep-ant-d64"]["bf16"] and not by["deep-ant-d64"]["remat"]
    assert not by["throughput-ant-d4"]["bf16"] and all(s["env"] == "ant" for s in todo)
    cfg = gpu_suite._config(by["throughput-ant-d4"], iters_per_epoch=gpu_suite.EPOCH_ITERS)
    # the paper's settings (teacher/config.py)
    assert (cfg.num_envs, cfg.unroll_length, cfg.batch_size, cfg.updates_per_iter) == (512, 62, 256, 800)
    assert set(gpu_suite.PLAN_S) == {s["name"] for s in todo if s["kind"] != "learn"}
    smoke = gpu_suite.steps(smoke=True)
    assert {s["kind"] for s in smoke} == {"throughput", "deep", "learn"}
    assert all(s["env"] == "pointmaze_u" for s in smoke)


def _measured(depth, kind, sgd=100.0, collect=1.0, compile_s=20.0):
    return {"step": {"depth": depth, "kind": kind}, "compile_s": compile_s, "sgd_steps_per_s": sgd,
            "collect_s_per_iter": collect, "num_envs": 512, "unroll_length": 62}


def test_learning_plan_uses_the_measured_rates_and_gives_equal_env_steps():
    learn = [s for s in gpu_suite.steps(False) if s["kind"] == "learn"]
    results = {"steps": {"a": _measured(4, "throughput", sgd=800.0), "b": _measured(64, "deep", sgd=80.0)}}
    env_steps, plan = gpu_suite.plan_learning(results, learn, remaining_s=300, smoke=False)
    per_epoch = 512 * 62 * gpu_suite.EPOCH_ITERS
    n = (env_steps - 512 * 1000) // per_epoch
    assert env_steps == 512 * 1000 + n * per_epoch and n >= 1
    # depth 64: 800 updates at 80/s + 1 s collection per iteration, 4 iterations an epoch
    d64 = (gpu_suite.LEARN_START_S + 20 + gpu_suite.EVAL_COMPILE_S
           + n * (4 * (1.0 + 800 / 80.0) + gpu_suite.EVAL_S))
    assert plan["learn-ant-d64"] == pytest.approx(d64) and sum(plan.values()) <= 300
    assert plan["learn-ant-d64"] > plan["learn-ant-d4"]
    more, _ = gpu_suite.plan_learning(results, learn, remaining_s=600, smoke=False)
    assert more > env_steps
    assert isinstance(gpu_suite.plan_learning(results, learn, remaining_s=60, smoke=False), str)
    fixed, _ = gpu_suite.plan_learning(results, learn, 10**6, False, fixed_env_steps=600_000)
    assert fixed == 512 * 1000 + per_epoch


def _fake_children(monkeypatch, calls, partial_rows=None, fail=()):
    """Children that take their planned time on a fake clock, time out leaving a partial row,
    or fail."""
    partial_rows = partial_rows or {}
    clock = [0.0]
    monkeypatch.setattr(gpu_suite.time, "perf_counter", lambda: clock[0])

    def fake_run(cmd, timeout=None, env=None, **kw):
        step = json.loads(cmd[-1])
        calls.append((step["name"], timeout))
        clock[0] += min(gpu_suite.PLAN_S.get(step["name"], 10.0), timeout)
        if step["name"] in partial_rows:
            Path(env[gpu_suite.PARTIAL_ENV]).write_text(json.dumps(partial_rows[step["name"]]))
            raise subprocess.TimeoutExpired(cmd, timeout)
        if step["name"] in fail:
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Traceback\nboom")
        row = _measured(step["depth"], step["kind"])
        if step["kind"] == "learn":
            row = {"env_steps": step["env_steps"], "success_any": 0.5}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(row), stderr="")

    monkeypatch.setattr(gpu_suite.subprocess, "run", fake_run)


def test_budget_skips_what_does_not_fit_and_keeps_partial_rows(tmp_path, monkeypatch):
    todo = gpu_suite.steps(smoke=False)
    out = tmp_path / "suite.json"
    calls = []
    _fake_children(monkeypatch, calls, partial_rows={"deep-ant-d64": {"compile_s": 33.0}},
                   fail=("deep-ant-d256",))
    # 200 s: (a) 100 s fits, d64 (80) fits, then 20 s are left for d256 (90) and d1000 (100)
    budget = gpu_suite.PLAN_S["throughput-ant-d4"] + gpu_suite.PLAN_S["deep-ant-d64"] + 20
    res = gpu_suite.run_suite(out, todo, budget, retry=False, smoke=False, work_dir=tmp_path)["steps"]
    assert [c[0] for c in calls] == ["throughput-ant-d4", "deep-ant-d64"]
    assert calls[0][1] <= budget and calls[1][1] < budget  # each child's timeout: the budget left
    assert res["deep-ant-d64"]["partial"] and res["deep-ant-d64"]["compile_s"] == 33.0
    assert "timed out" in res["deep-ant-d64"]["error"]
    assert "planned 90 s" in res["deep-ant-d256"]["skipped"]
    assert "learning needs" in res["learn-ant-d4"]["skipped"]
    assert json.loads(out.read_text())["steps"] == res
    # a second window: done and failed steps stay (no --retry), skipped ones run now
    calls.clear()
    res = gpu_suite.run_suite(out, todo, 10**4, retry=False, smoke=False, work_dir=tmp_path)["steps"]
    assert [c[0] for c in calls] == ["deep-ant-d256", "deep-ant-d1000", "learn-ant-d64", "learn-ant-d4"]
    assert "error" in res["deep-ant-d256"]
    assert res["learn-ant-d64"]["env_steps"] == res["learn-ant-d4"]["env_steps"] > 512 * 1000
    calls.clear()
    gpu_suite.run_suite(out, todo, 10**4, retry=True, smoke=False, work_dir=tmp_path)
    assert {c[0] for c in calls} == {"deep-ant-d64", "deep-ant-d256"}


def test_sigterm_keeps_the_running_steps_partial_row(tmp_path, monkeypatch):
    todo = gpu_suite.steps(smoke=False)[:2]
    out = tmp_path / "suite.json"

    def fake_run(cmd, env=None, **kw):
        Path(env[gpu_suite.PARTIAL_ENV]).write_text(json.dumps({"compile_s": 7.0}))
        gpu_suite._on_sigterm()

    monkeypatch.setattr(gpu_suite.subprocess, "run", fake_run)
    with pytest.raises(gpu_suite.Stopped):
        gpu_suite.run_suite(out, todo, 10**4, retry=False, smoke=False, work_dir=tmp_path)
    row = json.loads(out.read_text())["steps"]["throughput-ant-d4"]
    assert row["compile_s"] == 7.0 and row["error"] == "stopped by SIGTERM" and row["partial"]


def test_wheelhouse_check_finds_missing_and_duplicate_wheels(tmp_path, capsys):
    assert wheelhouse.check(tmp_path, "3.12") == 1
    assert "brax==0.14.2: missing" in capsys.readouterr().out
    for version, req in (("0.14.2", "etils"), ("0.14.1", "some-missing-dep")):
        with zipfile.ZipFile(tmp_path / f"brax-{version}-py3-none-any.whl", "w") as z:
            z.writestr(f"brax-{version}.dist-info/METADATA",
                       f"Name: brax\nRequires-Dist: {req}\nRequires-Dist: flask\n"
                       "Requires-Dist: pytest ; extra == 'test'\n")
    assert wheelhouse.check(tmp_path, "3.12") == 1
    out = capsys.readouterr().out
    assert "two wheels" in out and "requires some-missing-dep" in out
    assert "requires etils" not in out and "requires flask" not in out  # image; left out on purpose
    assert {"jax", "flax", "numpy", "onnxruntime", "setuptools"} <= wheelhouse.IMAGE
    assert not {wheelhouse.norm(n) for n in wheelhouse.WHEELS} & wheelhouse.IMAGE


def test_device_command_fits_and_does_what_the_window_needs():
    cmd = (ROOT / "benchmarks" / "gpu" / "device_command.txt").read_text()
    assert len(cmd) < 2000
    for part in ("--no-index --no-deps", ".whl/*.whl", "--no-build-isolation", "-e .", "timeout",
                 "gpu_suite.py --out $OUT/gpu_suite.json", "${SUITE_ARGS:-}", "pipefail"):
        assert part in cmd, part


@pytest.mark.slow  # four children, each a few compiles: ~2-6 min on a 2-core CPU
def test_smoke_suite_runs_on_cpu(tmp_path):
    out = tmp_path / "suite.json"
    res = subprocess.run([sys.executable, gpu_suite.__file__, "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = json.loads(out.read_text())["steps"]
    assert len(steps) == 4 and not [n for n, r in steps.items() if "error" in r or "skipped" in r]
    assert all(r["sgd_steps_per_s"] > 0 for r in steps.values() if r["step"]["kind"] != "learn")
    learn = [r for r in steps.values() if r["step"]["kind"] == "learn"]
    assert learn[0]["env_steps"] == learn[1]["env_steps"] and learn[0]["curve"]
    assert out.with_suffix(".png").stat().st_size > 1000
