"""A crl-distill robot in MuJoCo's own C engine (the `mujoco` package): no JAX, no brax.

This is the simulator a robot team's controllers already use, so running an exported policy here
is the sim-to-sim check before hardware. The robot is the env's one model definition
(`BraxGoalEnv.model_xml`: timestep, gears and the frame skip, as the custom numeric
`crl_frame_skip`, are all in it), which an exported file carries in its metadata (`native`), so
nothing here is configured in code per simulator. The observation is computed as the JAX env
computes it, and early termination follows the same torso-height rule.

    sim = NativeSim(spec, num_envs=128)        # spec: OnnxPolicy(...).metadata["native"]
    goal = sim.reset(rng)                      # or sim.set_state(q, qd) and your own goal
    for _ in range(episode_length):
        sim.step(policy.act(np.concatenate([sim.state(), goal], 1)))
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np

from crl_distill.errors import CrlDistillError
from crl_distill.perturb import (
    MODEL_FIELDS,
    NONE,
    Perturbation,
    Schedule,
    body_factor_index,
    draw_factors,
    has_free_base,
    kick_count,
    kick_plan,
    kick_velocity,
    noise_scale,
    scaled_fields,
)


def _observe_reacher(model: mujoco.MjModel) -> Callable[[mujoco.MjData], np.ndarray]:
    """cos(q0, q1), sin(q0, q1), fingertip xyz, fingertip world-frame velocity (10)."""
    tip = model.body("fingertip").id
    vel = np.zeros(6)

    def observe(data: mujoco.MjData) -> np.ndarray:
        q = data.qpos[:2]
        # [angular, linear] velocity of the fingertip body's origin, in world orientation.
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, tip, vel, 0)
        return np.concatenate([np.cos(q), np.sin(q), data.xpos[tip], vel[3:]])

    return observe


def _observe_qpos_qvel(model: mujoco.MjModel) -> Callable[[mujoco.MjData], np.ndarray]:
    """All joint positions then velocities (the ant: 15 + 14); brax's free-joint convention
    (world linear, body angular velocity) is MuJoCo's."""
    return lambda data: np.concatenate([data.qpos, data.qvel])


OBSERVERS: dict[str, Callable[[mujoco.MjModel], Callable[[mujoco.MjData], np.ndarray]]] = {
    "reacher": _observe_reacher,
    "qpos_qvel": _observe_qpos_qvel,
}


Starts = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _init_qpos(model: mujoco.MjModel) -> np.ndarray:
    """The pose resets jitter: the model's custom numeric `init_qpos` where it has one (brax reads
    it; the ant's stands on bent legs at 0.55 m), else MuJoCo's qpos0."""
    try:
        init = np.asarray(model.numeric("init_qpos").data, np.float64)
    except KeyError:
        return model.qpos0.copy()
    return init if init.shape == (model.nq,) else model.qpos0.copy()


def _reacher_starts(model: mujoco.MjModel, rng: np.random.Generator, n: int,
                    p: dict[str, Any]) -> Starts:
    """Arm joints and velocities jittered, the target (two slide joints) on a disc; the goal is
    where the target body lands, read after the state is set."""
    q = _init_qpos(model) + rng.uniform(-p["q_noise"], p["q_noise"], (n, model.nq))
    qd = rng.uniform(-p["qd_noise"], p["qd_noise"], (n, model.nv))
    r, a = p["target_radius"] * rng.uniform(size=n), 2 * np.pi * rng.uniform(size=n)
    q[:, 2:4] = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    qd[:, 2:] = 0.0
    return q, qd, None


def _ant_starts(model: mujoco.MjModel, rng: np.random.Generator, n: int,
                p: dict[str, Any]) -> Starts:
    """Every joint jittered (torso quaternion renormalised), velocities Gaussian; the goal a
    point `goal_dist` from the origin in a uniform direction."""
    q = _init_qpos(model) + rng.uniform(-p["q_noise"], p["q_noise"], (n, model.nq))
    q[:, 3:7] /= np.linalg.norm(q[:, 3:7], axis=1, keepdims=True)
    qd = p["qd_std"] * rng.standard_normal((n, model.nv))
    a = 2 * np.pi * rng.uniform(size=n)
    return q, qd, p["goal_dist"] * np.stack([np.cos(a), np.sin(a)], 1)


#: env start rules by the name an env's `native_starts()` gives; each mirrors that env's reset
START_RULES: dict[str, Callable[..., Starts]] = {"reacher": _reacher_starts, "ant": _ant_starts}


class NativeSim:
    """`num_envs` copies of one robot, stepped together.

    spec: {"env", "mjcf", "observer", "healthy_z_range"} as written by
    `BraxGoalEnv.native_spec` (and stored in exported files as metadata `native`).
    `perturb`: the robot's trouble (`crl_distill.perturb`), with the JAX env's semantics:
    `observation()` is what the policy sees, `state()` the true state; `seed` draws the
    model factors and the noise.
    """

    def __init__(self, spec: dict[str, Any], num_envs: int = 1, perturb: Perturbation = NONE,
                 seed: int = 0):
        try:
            self.model = mujoco.MjModel.from_xml_string(spec["mjcf"])
            observer = OBSERVERS[spec["observer"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CrlDistillError(f"native MuJoCo model for {spec.get('env')!r} is unusable: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        try:
            skip = self.model.numeric("crl_frame_skip").data
        except KeyError:
            skip = None
        if skip is None or len(skip) != 1 or skip[0] < 1:
            raise CrlDistillError("native MuJoCo model has no crl_frame_skip numeric")
        self.env = spec.get("env")
        self.frame_skip = int(skip[0])
        self.control_period = self.frame_skip * float(self.model.opt.timestep)
        self.healthy_z_range = spec.get("healthy_z_range")
        self.starts = spec.get("starts")
        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        self._observe = observer(self.model)
        self.perturb = perturb
        self.schedule = Schedule.of(perturb, float(self.model.opt.timestep), self.frame_skip)
        self._rng = np.random.default_rng(seed)
        units = tuple(spec.get("state_units") or ())
        self._noise = noise_scale(units, len(units), perturb) if units else None
        if perturb.obs_noise and self._noise is None:
            raise CrlDistillError(f"the native model for {self.env!r} records no state units, "
                                  f"which sensor noise is sized by: export the file again")
        # one model per env where each episode draws its own
        self.models = ([copy.deepcopy(self.model) for _ in range(num_envs)]
                       if perturb.randomizes_model else [self.model] * num_envs)
        self._base = {f: getattr(self.model, f).copy() for name in MODEL_FIELDS
                      for f in MODEL_FIELDS[name][0]}
        # mass factors are drawn per body as the JAX env's (fused) model has them
        self._body_factor = body_factor_index(self.model.body_parentid, self.model.body_jntnum)
        self.sizes = {"nbody": int(self._body_factor.max()) + 1, "nu": self.model.nu,
                      "nv": self.model.nv}
        if perturb.push and not has_free_base(self.model.jnt_type):
            raise CrlDistillError(f"{self.env} has no free base to push; drop push")
        self._kicks = kick_count(perturb, spec.get("episode_length", 1000) * self.control_period)
        self.factors: list[dict[str, np.ndarray]] = [{} for _ in range(num_envs)]
        self._commands = self._readings = self._seen = None
        self._substep = 0

    @property
    def num_envs(self) -> int:
        return len(self.datas)

    def set_state(self, q: np.ndarray, qd: np.ndarray,
                  factors: list[dict[str, np.ndarray]] | None = None) -> None:
        """q [E, nq], qd [E, nv]: joint positions and velocities (the JAX env's `sim.q/qd`):
        an episode start. A randomizing or pushing perturbation draws each env's model factors
        and kicks here, or takes them from `factors` (one dict per env: `perturb.draw_factors`,
        and "kicks", `perturb.kick_plan`)."""
        q, qd = np.asarray(q, np.float64), np.asarray(qd, np.float64)
        if q.shape != (self.num_envs, self.model.nq) or qd.shape != (self.num_envs, self.model.nv):
            raise CrlDistillError(f"native state shapes {q.shape}, {qd.shape} do not fit "
                                  f"{self.num_envs} x (nq {self.model.nq}, nv {self.model.nv})")
        if self.perturb.randomizes_model or self._kicks:
            self.factors = factors or [self._draw() for _ in range(self.num_envs)]
        if self.perturb.randomizes_model:
            for model, f in zip(self.models, self.factors, strict=True):
                per_body = {**f, "mass": f["mass"][self._body_factor]} if "mass" in f else f
                for field, value in scaled_fields(self._base, per_body).items():
                    getattr(model, field)[:] = value
        for model, data, qi, qdi in zip(self.models, self.datas, q, qd, strict=True):
            mujoco.mj_resetData(model, data)
            data.qpos[:], data.qvel[:] = qi, qdi
            mujoco.mj_forward(model, data)
        sched = self.schedule
        self._substep = 0
        self._commands = np.zeros((self.num_envs, sched.action_slots, self.model.nu))
        self._readings = np.repeat(self.state()[:, None], sched.obs_lag + 1, axis=1)
        self._seen = self._sensed()

    def _draw(self) -> dict[str, np.ndarray]:
        f = draw_factors(self.perturb, self.sizes, self._rng)
        if self._kicks:
            f["kicks"] = kick_plan(self.perturb, float(self.model.opt.timestep),
                                   self._rng.uniform(size=(self._kicks, 4)))
        return f

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Draw a start and goal per env from the env's own distribution (the model's `starts`)
        and set the starts. Returns the goals [E, goal_size] float32."""
        starts = self.starts
        if not isinstance(starts, dict) or starts.get("rule") not in START_RULES:
            raise CrlDistillError(f"the native model for {self.env!r} describes no start "
                                  f"distribution (files exported before it was recorded: export "
                                  f"again; maze envs: none is provided)")
        try:
            q, qd, goal = START_RULES[starts["rule"]](self.model, rng, self.num_envs, starts)
            body = None if goal is not None else self.model.body(starts["goal_body"]).id
        except (KeyError, TypeError, ValueError) as e:
            raise CrlDistillError(f"the native start distribution for {self.env!r} is unusable: "
                                  f"{type(e).__name__} {e}") from None
        self.set_state(q, qd)
        if body is not None:
            goal = np.stack([d.xpos[body] for d in self.datas])
        return np.asarray(goal, np.float32)

    def step(self, action: np.ndarray) -> None:
        """action [E, A] in [-1, 1] (clipped, as the JAX env clips): one control period, its
        substeps driven by the commands that have arrived (`perturb.Schedule`)."""
        action = np.clip(np.nan_to_num(np.asarray(action, np.float64)), -1.0, 1.0)
        if self.perturb.action_noise:
            action = np.clip(action + self.perturb.action_noise * self._rng.uniform(
                -1.0, 1.0, action.shape), -1.0, 1.0)
        self._commands = np.concatenate([action[:, None], self._commands[:, :-1]], 1)
        reading = []
        for i, (model, data) in enumerate(zip(self.models, self.datas, strict=True)):
            t = self._substep
            kicks = self.factors[i].get("kicks") if self._kicks else None
            for count, slot, read in self.schedule.segments():
                data.ctrl[:] = self._commands[i, slot]
                if kicks is None:
                    mujoco.mj_step(model, data, nstep=count)
                else:  # the free joint's linear x, y velocity, substep by substep
                    for j in range(t, t + count):
                        data.qvel[:2] += kick_velocity(kicks, j)
                        mujoco.mj_step(model, data)
                t += count
                if read:
                    reading.append(self._observe(data))
        self._substep += self.schedule.substeps
        self._readings = np.concatenate([np.asarray(reading, np.float32)[:, None],
                                         self._readings[:, :-1]], 1)
        self._seen = self._sensed()

    def state(self) -> np.ndarray:
        """[E, state_size] float32, the true state, laid out as the JAX env's state."""
        return np.stack([self._observe(d) for d in self.datas]).astype(np.float32)

    def observation(self) -> np.ndarray:
        """[E, state_size] float32: the state as the policy sees it (delayed, noisy); the
        true `state()` without a perturbation."""
        return self._seen if self._seen is not None else self.state()

    def _sensed(self) -> np.ndarray:
        seen = self._readings[:, -1].astype(np.float32)
        if self.perturb.obs_noise:
            seen = seen + self._noise * self._rng.uniform(-1.0, 1.0, seen.shape).astype(np.float32)
        return seen

    def terminated(self, state: np.ndarray) -> np.ndarray:
        """[E] bool: the torso height (state[:, 2]) left the healthy range, if the env has one."""
        if not self.healthy_z_range:
            return np.zeros(len(state), bool)
        lo, hi = self.healthy_z_range
        return (state[:, 2] < lo) | (state[:, 2] > hi)


def rollout(sim: NativeSim, act: Callable[[np.ndarray], np.ndarray], q: np.ndarray,
            qd: np.ndarray, goal: np.ndarray, goal_indices: list[int], threshold: float,
            steps: int, factors: list[dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """One episode per env from the given starts (and model factors, `NativeSim.set_state`):
    per-step success, terminated and distance [T, E] of the true state (feed them to
    `crl_distill.metrics.episode_metrics`); the policy acts on `sim.observation()`."""
    sim.set_state(q, qd, factors)
    goal = np.asarray(goal, np.float32)
    success, terminated, dist = [], [], []
    for _ in range(steps):
        sim.step(act(np.concatenate([sim.observation(), goal], 1)))
        state = sim.state()
        d = np.linalg.norm(state[:, goal_indices] - goal, axis=1)
        success.append(d < threshold)
        terminated.append(sim.terminated(state))
        dist.append(d)
    return {"success": np.stack(success), "terminated": np.stack(terminated),
            "dist": np.stack(dist)}
