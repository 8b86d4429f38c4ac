"""benchmarks/gpu_suite.py: the step list, resuming (done steps are skipped) and a CPU smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import gpu_suite  # noqa: E402


def test_steps_cover_the_depths_envs_and_the_big_maze_comparison():
    names = [s["name"] for s in gpu_suite.steps(smoke=False, big_maze_env_steps=10**6)]
    assert names == [f"throughput-ant-d{d}" for d in (4, 16, 64, 256, 1000)] + [
        "throughput-humanoid-d64", "learn-ant_big_maze-d4", "learn-ant_big_maze-d64"]
    deep = {s["depth"]: s for s in gpu_suite.steps(False, 10**6) if s["kind"] == "throughput"}
    assert deep[1000]["remat"] and deep[1000]["bf16"] and not deep[4]["bf16"]
    assert all(s["env"] == "pointmaze_u" for s in gpu_suite.steps(True, 10**6))


def test_done_steps_are_skipped_and_failed_ones_rerun_with_retry(tmp_path, monkeypatch):
    todo = gpu_suite.steps(smoke=True, big_maze_env_steps=200)
    out = tmp_path / "suite.json"
    done = {s["name"]: {"step": s, "compile_s": 1.0, "epoch_s": 1.0, "env_steps_per_s": 1.0,
                        "sgd_steps_per_s": 1.0, "peak_device_gib": None, "success_any": 0.5}
            for s in todo}
    done[todo[0]["name"]] = {"step": todo[0], "error": "boom"}
    out.write_text(json.dumps({"steps": done}))
    calls = []

    def fake_run(cmd, **kw):
        calls.append(json.loads(cmd[-1])["name"])
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"compile_s": 2.0}), stderr="")

    monkeypatch.setattr(gpu_suite.subprocess, "run", fake_run)
    gpu_suite.run_suite(out, todo, timeout_s=5, retry=False)
    assert calls == []
    res = gpu_suite.run_suite(out, todo, timeout_s=5, retry=True)
    assert calls == [todo[0]["name"]] and res["steps"][todo[0]["name"]]["compile_s"] == 2.0
    assert json.loads(out.read_text()) == res


@pytest.mark.slow  # five compiles, ~1-4 min on a 2-core CPU
def test_smoke_suite_runs_on_cpu(tmp_path):
    out = tmp_path / "suite.json"
    res = subprocess.run([sys.executable, gpu_suite.__file__, "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = json.loads(out.read_text())["steps"]
    assert len(steps) == 5 and not [n for n, r in steps.items() if "error" in r]
    assert all(r["env_steps_per_s"] > 0 for r in steps.values() if r["step"]["kind"] == "throughput")
    assert out.with_suffix(".png").stat().st_size > 1000
