"""Arm tasks: a scripted (no learning) controller shows each task is solvable; env throughput.

    python benchmarks/arm_scripted.py [--tasks arm_push_easy,arm_push_hard,arm_binpick_hard]
                                      [--seeds 16] [--throughput-envs 64] [--throughput-steps 50]
                                      [--default-xla-tasks arm_reach] [--default-xla-steps 2]
                                      [--out benchmarks/results/arm_scripted.json]

The controller reads only what a policy sees (the state vector and the goal) and answers with
env actions in [-1, 1]. Each step it picks a point for the fingertips (a small state machine:
push tasks go behind the cube and push it along the cube-to-goal line; bin picking grasps,
lifts over the walls, carries and releases), solves inverse kinematics for the four acted
joints on the host with MuJoCo's C kinematics (hand as upright as it can be), and inverts the env's
action mapping: the static equilibrium of each affine servo, gain * ctrl = stiffness * q +
gravity torque(q), gives the control that holds the solved pose, and the action is that control
rescaled. An episode counts as solved when the cube ends within 0.1 m of the goal.

Rollouts run the real env (`jax.vmap(env.step)` under jit, mjx physics) for all seeds at once;
the controller runs on the host between steps. Throughput is a jitted `lax.scan` of random
actions at `--throughput-envs` vmapped envs (compile excluded, best of 2), compiled on CPU with
XLA's fusion emitters off (the env's `jit_options`); `--default-xla-tasks`
are also timed with XLA's defaults, which run mjx's vmapped step 70-600x slower on CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

#: fingertip point (bottom of the closed finger pads, centred) in the flange (link7) frame
TOOL_OFFSET = np.array([0.0, 0.0, 0.107 + 0.0584 + 0.035 + 0.04])
#: reachable servo equilibria for joints 1, 2, 4, 6 (rad) under the env's action mapping:
#: joints 4 and 6 settle at gain / stiffness (4/7 and 1/2) of their target range.
EQ_LO = np.array([0.3491, 0.0, -3.0718 * 2 / 3.5, 2.3562 / 2])
EQ_HI = np.array([2.7925, 1.48353, -0.0698 * 2 / 3.5, 3.7525 / 2])
ACTED = (0, 1, 3, 5)
JOINT7_EQ = 1.4487 / 2  # joint 7 is held at target 1.4487 with gain / stiffness 1/2
CLOSE, OPEN = 1.0, -1.0


class HostArm:
    """Host-side kinematics of an arm env's model (MuJoCo C): IK and action inversion."""

    def __init__(self, env: Any):
        import mujoco

        self.mj = mujoco
        self.env = env
        self.model = env.sys.mj_model
        self.data = mujoco.MjData(self.model)
        self.data.qpos[:] = self.model.qpos0  # a valid (unit) quaternion for the cube, if any
        self.arm_q = 7 if env.has_cube else 0  # index of joint 1 in qpos
        self.link7 = self.model.body("link7").id
        acts = np.asarray(ACTED)
        self.gain = self.model.actuator_gainprm[acts, 0].copy()
        self.stiffness = -self.model.actuator_biasprm[acts, 1].copy()
        from crl_distill.envs.arm import TARGET_HI, TARGET_LO

        lo, hi = np.asarray(TARGET_LO)[acts], np.asarray(TARGET_HI)[acts]
        self.offset, self.scale = (lo + hi) / 2, (hi - lo) / 2

    def _pose(self, x: np.ndarray) -> None:
        """Set qpos for acted-joint angles x [4] (joints 3, 5 at 0; 7 at its equilibrium)."""
        q = self.data.qpos
        q[self.arm_q : self.arm_q + 7] = [x[0], x[1], 0.0, x[2], 0.0, x[3], JOINT7_EQ]
        self.mj.mj_kinematics(self.model, self.data)

    def tool(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [4] -> (fingertip point [3], flange z axis [3]) in the world frame."""
        self._pose(x)
        rot = self.data.xmat[self.link7].reshape(3, 3)
        return self.data.xpos[self.link7] + rot @ TOOL_OFFSET, rot[:, 2].copy()

    def ik(self, target: np.ndarray, x0: np.ndarray) -> np.ndarray:
        """Acted-joint angles [4] putting the fingertips at `target` [3], as upright as may be.

        Bounded least squares (scipy) inside the equilibria the servos can hold (EQ_LO, EQ_HI);
        the hand's tilt is weighted lightly because few low targets can be reached pointing
        straight down under the env's joint mapping. Restarts from the middle of the box when
        the warm start lands in a poor local minimum.
        """
        from scipy.optimize import least_squares

        def residual(x):
            p, z = self.tool(x)
            return np.concatenate([p - target, 0.03 * z[:2]])

        best = None
        for start in (x0, (EQ_LO + EQ_HI) / 2):
            sol = least_squares(residual, np.clip(start, EQ_LO + 1e-6, EQ_HI - 1e-6),
                                bounds=(EQ_LO, EQ_HI), xtol=1e-8, max_nfev=60)
            if best is None or sol.cost < best.cost:
                best = sol
            if np.linalg.norm(best.fun[:3]) < 2e-3:
                break
        return best.x

    def tool_from_state(self, state: np.ndarray) -> np.ndarray:
        """Fingertip point [3] of an observed state vector (its 7 joint angles)."""
        joints = state[3:10] if self.env.has_cube else state[0:7]
        self.data.qpos[self.arm_q : self.arm_q + 7] = joints
        self.mj.mj_kinematics(self.model, self.data)
        rot = self.data.xmat[self.link7].reshape(3, 3)
        return self.data.xpos[self.link7] + rot @ TOOL_OFFSET

    def action(self, x: np.ndarray, grip: float | None) -> np.ndarray:
        """Acted-joint equilibrium x [4] (+ gripper command) -> env action [action_size]."""
        self._pose(x)
        self.data.qvel[:] = 0.0
        self.mj.mj_forward(self.model, self.data)
        idx = self.arm_q - (1 if self.env.has_cube else 0)  # the cube's free joint: 7 q, 6 dofs
        gravity = self.data.qfrc_bias[idx + np.asarray(ACTED)]
        ctrl = (self.stiffness * x + gravity) / self.gain
        a = np.clip((ctrl - self.offset) / self.scale, -1.0, 1.0)
        return a if grip is None else np.append(a, grip)


class ScriptedArm:
    """A per-episode state machine for one push or bin-pick env; `act(state, goal)` -> action."""

    #: fingertip speed limit (m per env step, i.e. 0.4 m/s)
    max_step = 0.02

    def __init__(self, env: Any, host: HostArm | None = None):
        if not env.has_cube:
            raise ValueError(f"{env.name}: the scripted controller moves a cube (push, bin-pick tasks)")
        self.env = env
        self.host = host or HostArm(env)
        self.task = env.name
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.timer = 0
        self.x = np.array([1.571, 0.742, -0.9, 1.5])
        self.cmd: np.ndarray | None = None  # current commanded fingertip point

    def _go(self, waypoint: np.ndarray) -> bool:
        """Move the commanded point toward `waypoint` (speed-limited); True once it is there."""
        if self.cmd is None:
            self.cmd, _ = self.host.tool(self.x)
        delta = waypoint - self.cmd
        dist = float(np.linalg.norm(delta))
        self.cmd = waypoint.copy() if dist <= self.max_step else self.cmd + delta * self.max_step / dist
        return dist <= self.max_step

    def act(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """state [17], goal [3] -> action [5] in [-1, 1]."""
        state, goal = np.asarray(state, float), np.asarray(goal, float)
        binpick = self.task == "arm_binpick_hard"
        grip = self._binpick(state[:3], goal) if binpick else self._push(state, goal)
        self.x = self.host.ik(self.cmd, self.x)
        self.timer += 1
        return self.host.action(self.x, grip)

    # -- pushing ------------------------------------------------------------------------------
    def _push(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Fingers closed into one pusher: above a point behind the cube, down, push through it
        toward the goal, and go back up to start over when the cube leaves the push line."""
        cube = state[:3]
        to_goal = goal[:2] - cube[:2]
        remaining = float(np.linalg.norm(to_goal))
        d = to_goal / max(remaining, 1e-6)
        behind = cube[:2] - d * 0.075  # fingertips 7.5 cm behind the cube's centre
        low, high = 0.02, 0.12
        tip = self.host.tool_from_state(state)[:2]
        rel = cube[:2] - tip
        along, lateral = float(d @ rel), float(d[0] * rel[1] - d[1] * rel[0])
        if remaining < 0.025:
            self.phase = "done"
        if self.phase == "approach":
            if self._go(np.append(behind, high)):
                self.phase = "descend"
        elif self.phase == "descend":
            if self._go(np.append(behind, low)):
                self.phase = "push"
        elif self.phase == "push":
            # Push along the cube-to-goal line; start over from above when the fingertips are no
            # longer behind the cube on that line (the cube slid sideways or spun away).
            if along < 0.02 or along > 0.12 or abs(lateral) > 0.02:
                self.phase = "retreat"
            else:
                self._go(np.append(cube[:2] - d * (0.04 - min(0.03, remaining)), low))
        elif self.phase == "retreat":
            if self._go(np.append(self.cmd[:2], high)):
                self.phase = "approach"
        elif self.phase == "done":
            self._go(np.append(self.cmd[:2], high))
        return CLOSE

    # -- bin picking --------------------------------------------------------------------------
    def _binpick(self, cube: np.ndarray, goal: np.ndarray) -> float:
        """Open above the cube, descend around it, close, lift above the walls, carry, lower
        into the goal bin, open."""
        carry, grasp_z = 0.16, 0.012
        grip = OPEN
        if self.phase == "approach":
            if self._go(np.append(cube[:2], 0.12)):
                self.phase = "descend"
        elif self.phase == "descend":
            if self._go(np.append(cube[:2], grasp_z)):
                self.phase, self.timer = "close", 0
        elif self.phase == "close":
            grip = CLOSE
            if self.timer >= 6:
                self.phase = "lift"
        elif self.phase == "lift":
            grip = CLOSE
            if self._go(np.append(self.cmd[:2], carry)):
                self.phase = "carry"
        elif self.phase == "carry":
            grip = CLOSE
            if self._go(np.append(goal[:2], carry)):
                self.phase = "lower"
        elif self.phase == "lower":
            grip = CLOSE
            if self._go(np.append(goal[:2], grasp_z + 0.02)):
                self.phase, self.timer = "release", 0
        elif self.phase == "release":
            if self.timer >= 4:
                self.phase = "up"
        elif self.phase == "up":
            self._go(np.append(goal[:2], carry))
        return grip


# -- host simulation (C MuJoCo on the env's own model) ---------------------------------------


def host_observe(env: Any, model: Any, data: Any) -> np.ndarray:
    """The env's state vector computed from C MuJoCo data (same layout as `env._observe`)."""
    import mujoco

    link7 = model.body("link7").id
    vel = np.zeros(6)
    mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, link7, vel, 0)
    arm = data.qpos[7:14] if env.has_cube else data.qpos[0:7]
    parts = [arm, data.xpos[link7], vel[3:]]
    if env.has_cube:
        left, right = model.body("left_finger").id, model.body("right_finger").id
        parts = [data.qpos[:3], *parts, [np.linalg.norm(data.xpos[right] - data.xpos[left])]]
    return np.concatenate(parts)


def host_rollout(env: Any, seed: int, steps: int) -> dict[str, Any]:
    """Run the scripted controller on C MuJoCo (the env's model, same action mapping)."""
    import jax
    import mujoco

    q0, goal = (np.asarray(a) for a in env.sample_start(jax.random.PRNGKey(seed)))
    model = env.sys.mj_model
    data = mujoco.MjData(model)
    data.qpos[:] = q0
    mujoco.mj_forward(model, data)
    ctrl_fn = jax.jit(env._ctrl)
    agent = ScriptedArm(env)
    dists = []
    for _ in range(steps):
        state = host_observe(env, model, data)
        dists.append(float(np.linalg.norm(state[list(env.goal_indices)] - goal)))
        a = np.clip(np.nan_to_num(agent.act(state, goal)), -1.0, 1.0).astype(np.float32)
        data.ctrl[:] = np.asarray(ctrl_fn(a))
        for _ in range(env.n_frames):
            mujoco.mj_step(model, data)
    state = host_observe(env, model, data)
    dists.append(float(np.linalg.norm(state[list(env.goal_indices)] - goal)))
    return {"dists": dists, "final": dists[-1], "phase": agent.phase}


# -- the real env (mjx), all seeds at once ----------------------------------------------------


def env_rollouts(env: Any, seeds: int, steps: int) -> dict[str, Any]:
    """Scripted episodes on the env itself: `seeds` envs stepped together under jit + vmap."""
    import jax

    opts = env.jit_options
    keys = jax.vmap(jax.random.PRNGKey)(np.arange(seeds))
    state = jax.jit(jax.vmap(env.reset), compiler_options=opts)(keys)
    step = jax.jit(jax.vmap(env.step), compiler_options=opts)
    host = HostArm(env)
    agents = [ScriptedArm(env, host) for _ in range(seeds)]
    dists = [np.asarray(state.metrics["dist"])]
    t0 = time.perf_counter()
    for _ in range(steps):
        obs, goal = np.asarray(state.obs), np.asarray(state.goal)
        pairs = zip(agents, obs[:, : env.state_size], goal, strict=True)
        actions = np.stack([ag.act(s, g) for ag, s, g in pairs])
        state = step(state, actions.astype(np.float32))
        dists.append(np.asarray(state.metrics["dist"]))
    dists = np.stack(dists, axis=1)  # [seeds, steps + 1]
    return {"task": env.name, "seeds": seeds, "steps": steps, **summarize(dists, env.success_threshold),
            "final_phase": [ag.phase for ag in agents], "seconds": time.perf_counter() - t0}


#: distance curves are stored every this many env steps (0.25 s)
CURVE_STRIDE = 5


def summarize(dists: np.ndarray, threshold: float) -> dict[str, Any]:
    """[seeds, steps + 1] cube-to-goal distances -> success counts and (strided) curves."""
    start, final = dists[:, 0], dists[:, -1]
    return {
        "successes": int((final < threshold).sum()),
        "successes_from_outside": int(((final < threshold) & (start >= threshold)).sum()),
        "started_outside": int((start >= threshold).sum()),
        "ever_successes": int((dists.min(axis=1) < threshold).sum()),
        "start_dist": start.round(4).tolist(),
        "final_dist": final.round(4).tolist(),
        "curve_stride": CURVE_STRIDE,
        "dist_curves": dists[:, ::CURVE_STRIDE].round(3).tolist(),
    }


#: scripted episode length per task (env steps of 0.05 s)
EPISODE_STEPS = {"arm_push_easy": 120, "arm_push_hard": 200, "arm_binpick_hard": 150}


def main() -> None:
    from _common import machine_info, write_json
    from env_throughput import measure

    from crl_distill.envs.arm import ARM_MAKERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default=",".join(EPISODE_STEPS))
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--throughput-tasks", default=",".join(ARM_MAKERS))
    p.add_argument("--throughput-envs", type=int, default=64)
    p.add_argument("--throughput-steps", type=int, default=50)
    p.add_argument("--default-xla-tasks", default="arm_reach",
                   help="on CPU, also time these tasks with XLA's default options (slow: minutes)")
    p.add_argument("--default-xla-steps", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/arm_scripted.json")
    args = p.parse_args()
    scripted, speed = [], []
    for task in filter(None, args.tasks.split(",")):
        r = env_rollouts(ARM_MAKERS[task](), args.seeds, EPISODE_STEPS[task])
        scripted.append(r)
        print(f"{task:<18} scripted successes {r['successes']:>2}/{r['seeds']} "
              f"({r['successes_from_outside']}/{r['started_outside']} of those starting outside 0.1 m; "
              f"ever within 0.1 m: {r['ever_successes']}; {r['seconds']:.0f} s)", flush=True)
    for task in filter(None, args.throughput_tasks.split(",")):
        fast = ARM_MAKERS[task]().jit_options
        variants = [("fusion emitters off" if fast else "XLA defaults", fast, args.throughput_steps)]
        if fast and task in args.default_xla_tasks.split(","):
            variants.append(("XLA defaults", {}, args.default_xla_steps))
        for label, options, steps in variants:
            r = measure(task, args.throughput_envs, steps, options, repeats=2)
            r["variant"] = label
            speed.append(r)
            print(f"{task:<18} {r['num_envs']} envs, {label}: {r['env_steps_per_s']:,.1f} env steps/s "
                  f"(compile {r['compile_s']:.0f} s)", flush=True)
    write_json(args.out, {"machine": machine_info(), "scripted": scripted, "throughput": speed})
    if scripted:
        plot(scripted, Path(args.out).with_suffix(".png"))


def plot(scripted: list[dict[str, Any]], path: Path) -> None:
    """Cube-to-goal distance over each scripted episode, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scripted), figsize=(4.2 * len(scripted), 3.4), squeeze=False)
    for ax, r in zip(axes[0], scripted, strict=True):
        curves = np.asarray(r["dist_curves"])
        t = np.arange(curves.shape[1]) * 0.05 * r["curve_stride"]
        for c in curves:
            ax.plot(t, c, color="tab:green" if c[-1] < 0.1 else "tab:red", alpha=0.6, lw=1)
        ax.axhline(0.1, color="k", ls="--", lw=1, label="success (0.1 m)")
        ax.set_title(f"{r['task']}: {r['successes']}/{r['seeds']} solved")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("cube to goal (m)")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
