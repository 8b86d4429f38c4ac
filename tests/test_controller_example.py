"""examples/robot_controller.py drives native MuJoCo with an exported policy, without JAX."""

import subprocess
import sys
from pathlib import Path

from helpers import fixed_teacher

from crl_distill.distill import DistillConfig, distill
from crl_distill.export import export

EXAMPLE = Path(__file__).parent.parent / "examples" / "robot_controller.py"


def test_controller_runs_with_runtime_and_mujoco_only(tmp_path):
    students = distill(fixed_teacher(env="reacher"), students="1x16", out=tmp_path / "s",
                       progress=False,
                       config=DistillConfig(iterations=1, num_envs=8, steps_per_iter=10,
                                            sgd_steps_per_iter=5, eval_episodes=2))
    onnx_path = export(students.out_dir, out=tmp_path / "reacher.onnx", skip_gates=True).path
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
