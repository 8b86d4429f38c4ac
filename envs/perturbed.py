"""A brax robot under a perturbation spec (`crl_distill.perturb`): sensor noise, observation and
action latency at the physics substep, action noise and a model drawn per episode.

`perturbed(env, spec)` is a GoalEnv like any other: every trainer and evaluator runs it
unchanged, vmapped per env, with the delay lines, the episode's model factors and the noise
key in the env state (`PerturbedSim`). Goals, metrics and termination come from the true
state; `clean_obs(state)` is the observation without noise or delay (what a teacher that sees
the privileged state gets). The model is drawn per episode as mujoco_playground's randomize
functions do for MJX: factors in the state, the mjx.Model's fields rebuilt from them inside
the step, so vmapping the step vmaps the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from crl_distill.envs.base import EnvState, GoalEnv, WrappedEnv
from crl_distill.envs.brax_base import BraxGoalEnv
from crl_distill.envs.observed import ObservedEnv
from crl_distill.errors import CrlDistillError
from crl_distill.perturb import (
    MODEL_FIELDS,
    Perturbation,
    Schedule,
    factor_counts,
    has_free_base,
    kick_count,
    kick_plan,
    kick_velocity,
    noise_scale,
    scaled_fields,
)


@struct.dataclass
class PerturbedSim:
    inner: EnvState        # the robot's true state (its obs: the clean observation)
    commands: jax.Array    # [action_slots, A] the policy's last commands, newest first
    readings: jax.Array    # [obs_lag + 1, state_size] sensor readings, newest first
    factors: dict[str, jax.Array]  # this episode's draw: model factors, "kicks" (pushes)
    key: jax.Array         # noise key


def model_sizes(env: BraxGoalEnv) -> dict[str, int]:
    sys = env.sys
    return {"nbody": int(sys.body_mass.shape[0]), "nu": int(sys.actuator_gainprm.shape[0]),
            "nv": int(sys.dof_damping.shape[0])}


class PerturbedEnv(WrappedEnv):
    """`inner` (a brax robot) under `spec`; sizes and names are the robot's. `sensed=False`
    perturbs the physics only (model, action latency and noise): the observation is the true
    state, as a privileged teacher trained with domain randomization sees it."""

    def __init__(self, inner: GoalEnv, spec: Perturbation, sensed: bool = True):
        if not isinstance(inner, BraxGoalEnv):
            raise CrlDistillError(f"--perturb applies to the robot envs (reacher, ant, humanoid, "
                                  f"arm): {inner.name} has no physics substeps")
        if (spec.randomizes_model or spec.push) and inner.backend != "mjx":
            raise CrlDistillError(f"{inner.name}: model randomization (mass, friction, gain, "
                                  f"damping) and pushes act on MuJoCo's model and state; use "
                                  f"backend=mjx (the spring pipeline is another physics)")
        if spec.push and not has_free_base(np.asarray(inner.sys.jnt_type)):
            raise CrlDistillError(f"{inner.name} has no free base to push; drop push (the "
                                  f"'legged' preset pushes; 'robot' does not)")
        super().__init__(inner, ("name", "state_size", "goal_indices", "action_size",
                                 "episode_length", "success_threshold", "backend",
                                 "control_period", "layout", "termination", "goal_distribution",
                                 "options", "state_names", "state_units", "action_names"))
        self.spec, self.sensed = spec, sensed
        if not sensed:  # the true state: no reading delay, no sensor noise
            spec = dataclasses.replace(spec, obs_noise=0.0, obs_latency=0.0)
            self.spec = spec
        self.schedule = Schedule.of(spec, inner.timestep, inner.n_frames)
        self._noise = jnp.asarray(noise_scale(inner.state_units, inner.state_size, spec))
        self._counts = factor_counts(spec, model_sizes(inner)) if spec.randomizes_model else {}
        self._kicks = kick_count(spec, inner.episode_length * inner.control_period)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "perturbation": self.spec.to_dict()}

    # -- the model ------------------------------------------------------------------------
    def draw_factors(self, key: jax.Array) -> dict[str, jax.Array]:
        """One episode's model factors and kicks (the distributions `perturb.draw_factors`
        and `perturb.kick_plan` draw)."""
        keys = jax.random.split(key, len(self._counts) + 1)
        out = {name: jax.random.uniform(k, (n,), minval=getattr(self.spec, name)[0],
                                        maxval=getattr(self.spec, name)[1])
               for k, (name, n) in zip(keys, self._counts.items(), strict=False)}
        if self._kicks:
            out["kicks"] = kick_plan(self.spec, self.inner.timestep,
                                     jax.random.uniform(keys[-1], (self._kicks, 4)), jnp)
        return out

    def model(self, factors: dict[str, jax.Array]) -> Any:
        """The robot's System with this episode's factors applied."""
        sys = self.inner.sys
        factors = {k: v for k, v in factors.items() if k in MODEL_FIELDS}
        if not factors:
            return sys
        names = {f for name in factors for f in MODEL_FIELDS[name][0]}
        return sys.replace(**scaled_fields({f: getattr(sys, f) for f in names}, factors))

    # -- GoalEnv ----------------------------------------------------------------------------
    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with(key, None)

    def reset_with(self, key: jax.Array, factors: dict[str, jax.Array] | None) -> EnvState:
        """A reset with given model factors (None: drawn), for tests and paired comparisons."""
        # the robot's own reset key: the same seeds give the same starts and goals with and
        # without the perturbation (paired comparisons)
        k_model, k_noise = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
        start = self.inner.reset(key)
        factors = self.draw_factors(k_model) if factors is None else factors
        if self._counts:  # the start's derived quantities (contacts, kinematics) under this model
            env = self.inner
            ps = env._pipeline.init(self.model(factors), start.sim.q, start.sim.qd)
            start = env._pack(ps, env._finite(env._observe(ps, None)), start.goal,
                              start.steps, jnp.zeros((), bool))
        state_vec = start.obs[: self.state_size]
        sim = PerturbedSim(
            inner=start,
            commands=jnp.zeros((self.schedule.action_slots, self.action_size), jnp.float32),
            readings=jnp.tile(state_vec, (self.schedule.obs_lag + 1, 1)),
            factors=factors, key=k_noise)
        return self._wrap(sim)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        env, sim = self.inner, state.sim
        lo, hi = self.action_bounds
        key, k_act, k_obs = jax.random.split(sim.key, 3)
        action = jnp.clip(jnp.nan_to_num(action.astype(jnp.float32)), lo, hi)
        if self.spec.action_noise:
            action = jnp.clip(action + self.spec.action_noise * jax.random.uniform(
                k_act, action.shape, minval=-1.0, maxval=1.0), lo, hi)
        commands = jnp.concatenate([action[None], sim.commands[:-1]])
        sys = self.model(sim.factors)
        kicks = sim.factors.get("kicks")
        ps, reading, ctrl = sim.inner.sim, None, None
        first = sim.inner.steps * self.schedule.substeps  # this step's first substep
        for count, slot, read in self.schedule.segments():
            ctrl = env._ctrl(commands[slot])

            def substep(p, t, ctrl=ctrl):
                if kicks is not None:  # the free joint's linear x, y velocity
                    p = p.replace(qvel=p.qvel.at[:2].add(kick_velocity(kicks, t, jnp)))
                return env._pipeline.step(sys, p, ctrl), None

            new, _ = jax.lax.scan(substep, ps, first + jnp.arange(count))
            first = first + count
            # as the robot's own step: a blown-up simulation keeps its last finite state
            ok = jnp.isfinite(new.q).all() & jnp.isfinite(new.qd).all()
            ps = jax.tree_util.tree_map(lambda a, b, ok=ok: jnp.where(ok, a, b), new, ps)
            if read:
                reading = env._finite(env._observe(ps, ctrl))
        state_vec = env._finite(env._observe(ps, ctrl))  # ctrl: the last segment's
        inner = env._pack(ps, state_vec, sim.inner.goal, sim.inner.steps + 1,
                          env._terminated(ps, state_vec))
        readings = jnp.concatenate([reading[None], sim.readings[:-1]])
        return self._wrap(sim.replace(inner=inner, commands=commands, readings=readings, key=key),
                          k_obs)

    def _wrap(self, sim: PerturbedSim, k_obs: jax.Array | None = None) -> EnvState:
        seen = sim.readings[-1]
        if self.spec.obs_noise:
            k = jax.random.fold_in(sim.key, 1) if k_obs is None else k_obs
            seen = seen + self._noise * jax.random.uniform(k, seen.shape, minval=-1.0, maxval=1.0)
        inner = sim.inner
        return EnvState(sim=sim, obs=jnp.concatenate([seen, inner.goal]), goal=inner.goal,
                        steps=inner.steps, done=inner.done, terminated=inner.terminated,
                        metrics=inner.metrics)


def perturbed(env: GoalEnv, spec: Perturbation | None, sensed: bool = True) -> GoalEnv:
    """`env` itself when `spec` perturbs nothing, else the wrapped env. A student's view
    (`observed`) stays on top: the perturbation acts on the robot below it, so the student's
    history stacks the delayed, noisy readings it would get on the robot."""
    if spec is None or spec.is_none:
        return env
    if isinstance(env, ObservedEnv):
        return ObservedEnv(PerturbedEnv(env.inner, spec, sensed), env.spec)
    return PerturbedEnv(env, spec, sensed)


def clean_obs(env: GoalEnv, state: EnvState) -> jax.Array:
    """The observation without noise or delay in `state` of `env` (perturbed or not)."""
    return state.sim.inner.obs if isinstance(env, PerturbedEnv) else state.obs


def teacher_view(env: GoalEnv, state: EnvState) -> jax.Array:
    """The teacher's observation in `state` of `env`, however wrapped: the full state (not a
    student's view of it), clean (no noise or delay)."""
    if isinstance(env, ObservedEnv):
        return teacher_view(env.inner, state.sim.inner)
    return clean_obs(env, state)


def true_start(env: GoalEnv, state: EnvState) -> tuple[EnvState, list[dict[str, np.ndarray]] | None]:
    """The robot's own state of a batch of `state`s of a (perturbed) env, and each episode's
    model factors (None: nominal), for starting native MuJoCo the same way."""
    if not isinstance(env, PerturbedEnv):
        return state, None
    sim: PerturbedSim = state.sim
    n = int(np.shape(sim.inner.steps)[0])
    factors = ([{k: np.asarray(v[i], np.float64) for k, v in sim.factors.items()} for i in range(n)]
               if sim.factors else None)
    return sim.inner, factors


__all__ = ["PerturbedEnv", "PerturbedSim", "clean_obs", "model_sizes", "perturbed",
           "teacher_view", "true_start"]
