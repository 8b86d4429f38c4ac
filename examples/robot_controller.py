"""A fixed-rate controller that drives the native MuJoCo reacher with an exported policy.

    python examples/robot_controller.py --policy policy.onnx [--episodes 5] [--steps 250]
        [--no-realtime] [--seed 0]

Uses only crl_distill.runtime (numpy + onnxruntime) and the `mujoco` package: no JAX, no brax.
The model is the reacher's own MJCF (the copy installed with the brax package, read by path),
simulated by MuJoCo itself, so this is the sim-to-sim check a robot team runs before hardware:
the policy was trained in brax's `spring` pipeline, and here it meets real MuJoCo contact and
actuator dynamics. Printed: success per goal (fingertip within the file's success threshold at
any time), final distance, and the loop's timing (inference time, period error p50/p99).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import mujoco
import numpy as np

from crl_distill.runtime import OnnxPolicy, PolicyError


def reacher_xml() -> Path:
    """brax's reacher.xml, located without importing brax (find_spec runs no package code)."""
    spec = importlib.util.find_spec("brax")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the brax package (for its reacher.xml asset) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "envs" / "assets" / "reacher.xml"


class NativeReacher:
    """MuJoCo reacher with crl-distill's observation layout:
    state = cos(q0, q1), sin(q0, q1), fingertip xyz, fingertip velocity xyz; goal = target xyz."""

    def __init__(self, control_period: float, physics_dt: float = 0.005):
        self.model = mujoco.MjModel.from_xml_path(str(reacher_xml()))
        self.model.opt.timestep = physics_dt
        self.substeps = max(1, round(control_period / physics_dt))
        self.data = mujoco.MjData(self.model)
        self.tip = self.model.body("fingertip").id
        self.target = self.model.body("target").id
        self._vel = np.zeros(6)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:2] = rng.uniform(-0.1, 0.1, 2)
        r, a = 0.2 * rng.uniform(), 2 * np.pi * rng.uniform()
        self.data.qpos[2:4] = [r * np.cos(a), r * np.sin(a)]
        mujoco.mj_forward(self.model, self.data)
        return self.goal()

    def goal(self) -> np.ndarray:
        return self.data.xpos[self.target].copy()

    def state(self) -> np.ndarray:
        q = self.data.qpos[:2]
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_BODY, self.tip,
                                 self._vel, 0)
        return np.concatenate([np.cos(q), np.sin(q), self.data.xpos[self.tip],
                               self._vel[3:]]).astype(np.float32)

    def apply(self, action: np.ndarray) -> None:
        self.data.ctrl[:2] = action
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--policy", required=True, help="exported reacher policy (.onnx)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--steps", type=int, default=250, help="control steps per goal")
    p.add_argument("--no-realtime", action="store_true", help="run as fast as possible")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    policy = OnnxPolicy(args.policy)
    if policy.env != "reacher":
        raise SystemExit(f"{args.policy} controls {policy.env!r}; this example drives the reacher")
    period = policy.control_period
    threshold = float(policy.metadata["success_threshold"])
    robot = NativeReacher(period)
    rng = np.random.default_rng(args.seed)
    infer_us, period_err_us, successes, finals, rejected = [], [], 0, [], 0
    for ep in range(args.episodes):
        goal = robot.reset(rng)
        reached = False
        next_tick = time.perf_counter()
        last_tick = None
        for _ in range(args.steps):
            now = time.perf_counter()
            if last_tick is not None:
                period_err_us.append((now - last_tick - (0 if args.no_realtime else period)) * 1e6)
            last_tick = now
            t0 = time.perf_counter()
            try:
                action = policy.act(state=robot.state(), goal=goal)
            except PolicyError:  # a bad sensor reading: hold still rather than actuate garbage
                action, rejected = np.zeros(policy.action_size, np.float32), rejected + 1
            infer_us.append((time.perf_counter() - t0) * 1e6)
            robot.apply(action)
            dist = float(np.linalg.norm(robot.data.xpos[robot.tip] - goal))
            reached |= dist < threshold
            if not args.no_realtime:
                next_tick += period
                time.sleep(max(0.0, next_tick - time.perf_counter()))
        successes += reached
        finals.append(dist)
        print(f"goal {ep + 1}: {'reached' if reached else 'missed '}  final distance {dist:.3f} m")
    pe = np.abs(np.asarray(period_err_us)) if period_err_us else np.zeros(1)
    print(f"success {successes}/{args.episodes} (threshold {threshold} m), mean final distance "
          f"{np.mean(finals):.3f} m; rejected observations {rejected}")
    print(f"inference p50 {np.median(infer_us):.1f} us, p99 {np.quantile(infer_us, 0.99):.1f} us;"
          f" control period {period * 1e3:.0f} ms"
          + ("" if args.no_realtime else
             f", |period error| p50 {np.median(pe):.0f} us, p99 {np.quantile(pe, 0.99):.0f} us"))


if __name__ == "__main__":
    main()
