"""An env seen through a student's observation spec (`crl_distill.obs_spec.ObsSpec`).

`observed(env, spec)` is a GoalEnv whose `obs` is the student's input (a subset of the state,
past states, the goal); physics, goals, rewards-free metrics and termination are the wrapped
env's. Every evaluator and trainer that takes a GoalEnv therefore runs a reduced-observation
student unchanged; the teacher's full observation stays available as `teacher_obs(state)`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from crl_distill.envs.base import EnvState, GoalEnv
from crl_distill.obs_spec import ObsSpec


@struct.dataclass
class ObservedSim:
    inner: EnvState   # the wrapped env's state (its obs is the teacher's observation)
    history: jax.Array  # [history * kept_size], newest first


class ObservedEnv(GoalEnv):
    """`inner` observed through `spec`; sizes describe the student's input."""

    def __init__(self, inner: GoalEnv, spec: ObsSpec):
        spec.check(inner.state_size, f"{inner.name}'s state")
        self.inner, self.spec = inner, spec
        for attr in ("name", "goal_indices", "action_size", "episode_length", "success_threshold",
                     "backend", "control_period", "termination", "goal_distribution", "options"):
            setattr(self, attr, getattr(inner, attr))
        self.state_size = spec.input_state_size(inner.state_size)
        self.layout = f"student input = {spec.describe(inner.state_size)}; teacher: {inner.layout}"

    @property
    def jit_options(self) -> dict[str, Any]:
        return self.inner.jit_options

    @property
    def action_bounds(self) -> tuple[float, float]:
        return self.inner.action_bounds

    def native_spec(self) -> dict[str, Any] | None:
        return self.inner.native_spec()

    def _wrap(self, inner: EnvState, history: jax.Array) -> EnvState:
        obs = self.spec.student_input(inner.obs, history, self.inner.state_size, jnp)
        return EnvState(sim=ObservedSim(inner=inner, history=history), obs=obs, goal=inner.goal,
                        steps=inner.steps, done=inner.done, terminated=inner.terminated,
                        metrics=inner.metrics)

    def reset(self, key: jax.Array) -> EnvState:
        inner = self.inner.reset(key)
        state = inner.obs[None, : self.inner.state_size]
        return self._wrap(inner, self.spec.start_history(state, jnp)[0])

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        sim: ObservedSim = state.sim
        history = self.spec.push(sim.history[None], sim.inner.obs[None, : self.inner.state_size],
                                 jnp)[0]
        return self._wrap(self.inner.step(sim.inner, action), history)

    def achieved_goal(self, state_vec: jax.Array) -> jax.Array:
        raise TypeError("a student's observation need not hold the achieved goal; use the "
                        "wrapped env's")

    def interface(self) -> dict[str, list[dict[str, Any]]]:
        inner = self.inner.interface()
        state = [e for e in inner["observation"] if e["source"] == "state"]
        kept = state if self.spec.state_indices is None else [state[i] for i in self.spec.state_indices]
        past = [{**e, "name": f"{e['name']}@t-{k}"} for k in range(1, self.spec.history + 1)
                for e in kept]
        goal = [e for e in inner["observation"] if e["source"] == "goal"]
        return {"observation": kept + past + goal, "action": inner["action"]}

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "observation_size": self.observation_size,
                "state_size": self.state_size, "layout": self.layout,
                "student_obs": self.spec.to_dict(), "teacher_state_size": self.inner.state_size}


def observed(env: GoalEnv, spec: ObsSpec | None) -> GoalEnv:
    """`env` itself when the spec keeps the teacher's observation, else the wrapped env."""
    return env if spec is None or spec.is_identity else ObservedEnv(env, spec)


def teacher_obs(env: GoalEnv, state: EnvState) -> jax.Array:
    """The teacher's observation in `state` of `env` (wrapped or not)."""
    return state.sim.inner.obs if isinstance(env, ObservedEnv) else state.obs


__all__ = ["ObservedEnv", "ObservedSim", "observed", "teacher_obs"]
