"""examples/robot_controller.py drives native MuJoCo with an exported policy, without JAX."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from helpers import fixed_teacher

from crl_distill.distill import DistillConfig, distill
from crl_distill.export import export

EXAMPLE = Path(__file__).parent.parent / "examples" / "robot_controller.py"


def _exported_student(tmp_path: Path, env: str) -> Path:
    students = distill(fixed_teacher(env=env), students="1x16", out=tmp_path / "s",
                       progress=False,
                       config=DistillConfig(iterations=1, num_envs=8, steps_per_iter=10,
                                            sgd_steps_per_iter=5, eval_episodes=2))
    return export(students.out_dir, out=tmp_path / "policy.onnx", skip_gates=True).path


# the ant's case compiles the brax ant for distillation (~1.5 min of CI): the reacher's covers
# the example, tests/test_native.py the ant's native model
@pytest.mark.parametrize("env", ["reacher", pytest.param("ant:goal_dist=2", marks=pytest.mark.slow)])
def test_controller_runs_with_runtime_and_mujoco_only(tmp_path, env):
    onnx_path = _exported_student(tmp_path, env)
    code = (
        "import runpy, sys\n"
        "sys.modules['jax'] = None; sys.modules['flax'] = None\n"
        f"sys.argv = ['robot_controller.py', '--policy', {str(onnx_path)!r}, '--episodes', '2',"
        " '--steps', '30', '--no-realtime']\n"
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
        "assert 'brax' not in sys.modules, 'the example imported brax'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "goal 1:" in out and "goal 2:" in out
    assert "success_any " in out and "time at goal" in out and "inference p50" in out
    assert f"control period {40 if env == 'reacher' else 50} ms" in out
    if env == "reacher":
        _a_file_without_native_starts_is_refused(onnx_path)


def _a_file_without_native_starts_is_refused(onnx_path: Path) -> None:
    """A file exported without a start distribution (maze envs, or older exports): one line."""
    model = onnx.load(onnx_path)
    for prop in model.metadata_props:
        if prop.key == "crl_distill.native":
            prop.value = json.dumps({**json.loads(prop.value), "starts": None})
    onnx.save(model, onnx_path)
    res = subprocess.run([sys.executable, str(EXAMPLE), "--policy", str(onnx_path), "--episodes",
                          "1", "--steps", "2", "--no-realtime"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "describes no start distribution" in res.stderr.strip().splitlines()[-1]
