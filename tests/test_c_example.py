"""The C controller example builds against a C export and the mujoco wheel, and drives the reacher
with no Python in the loop (as CI does)."""

import os
import re
import subprocess
from pathlib import Path

import jax
import pytest

from crl_distill.envs import make
from crl_distill.export import export
from crl_distill.student import StudentConfig, save_student
from crl_distill.student.model import init_student

EXAMPLE = Path(__file__).parent.parent / "examples" / "c_controller"


def _build(root: Path, cfg: StudentConfig) -> tuple[Path, Path]:
    """A (randomly initialised) reacher student exported as C, and the example built against it.

    Training does not matter here: the C export's parity is gated in test_c_export; this checks
    that the example builds and runs, so the student file is written directly."""
    env = make("reacher")
    params = init_student(cfg, jax.random.PRNGKey(0), env.observation_size, env.state_size,
                          env.goal_size, env.action_size)
    student = save_student(root / f"student-{cfg.name}.npz", cfg, params,
                           {"env": "reacher", "env_facts": env.describe()})
    exp = export(student, out=root / "build" / "policy.onnx", skip_gates=True, fmt="c")
    assert [p.name for p in exp.c_paths] == ["policy.h", "policy.c", "policy.xml"]
    binary = root / "build" / "controller"
    subprocess.run(["sh", str(EXAMPLE / "build.sh"), str(root / "build"), str(binary)], check=True,
                   env={**os.environ})
    return binary, root / "build" / "policy.xml"


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("cctl"), StudentConfig(1, 16))


def _run_two_goals(binary: Path, model: Path) -> str:
    r = subprocess.run([str(binary), str(model), "2", "--seed", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_controller_builds_and_runs_a_recurrent_student(tmp_path):
    """The same example against a GRU export: its state struct lives in the controller and is
    reset at every goal."""
    binary, model = _build(tmp_path, StudentConfig(1, 8, cell="gru"))
    assert "policy_state" in (tmp_path / "build" / "policy.h").read_text()
    assert "over 2 goals" in _run_two_goals(binary, model)


def test_c_controller_runs_episodes_and_reports(controller):
    out = _run_two_goals(*controller)
    lines = out.splitlines()
    assert len([x for x in lines if x.startswith("goal ")]) == 2
    m = re.search(r"success_any ([\d.]+) \+- ([\d.]+), time at goal ([\d.]+) \+- ([\d.]+) of 1000 "
                  r"over 2 goals \(threshold 0.05 m\); rejected observations 0", out)
    assert m, out
    assert 0.0 <= float(m[1]) <= 1.0
    assert re.search(r"inference p50 [\d.]+ us, p99 [\d.]+ us per action", out)


def test_c_controller_refuses_a_bad_model_file(controller, tmp_path):
    binary, _ = controller
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody/></mujoco>")
    r = subprocess.run([str(binary), str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not the reacher model" in r.stderr
    r = subprocess.run([str(binary), str(tmp_path / "missing.xml")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot load the model" in r.stderr
