"""An env seen through a student's observation spec (`crl_distill.obs_spec.ObsSpec`).

`observed(env, spec)` is a GoalEnv whose `obs` is the student's input (a subset of the state,
past states, the goal); physics, goals, rewards-free metrics and termination are the wrapped
env's. Every evaluator and trainer that takes a GoalEnv therefore runs a reduced-observation
student unchanged; the teacher's full observation stays available (`envs.perturbed.teacher_view`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from crl_distill.envs.base import EnvState, GoalEnv, WrappedEnv
from crl_distill.errors import CrlDistillError
from crl_distill.obs_spec import ObsSpec


@struct.dataclass
class ObservedSim:
    inner: EnvState   # the wrapped env's state (its obs is the teacher's observation)
    history: jax.Array  # [history_size] = [history * kept_size], newest first


class ObservedEnv(WrappedEnv):
    """`inner` observed through `spec`; sizes describe the student's input.

    Each size has one name and one meaning:

    * `state_size`: the state part of the observation the policy gets, as GoalEnv defines it:
      the current kept elements and `spec.history` past copies of them,
      (history + 1) x kept_size; `obs` is [state_size + goal_size].
    * `kept_size`: the teacher state elements the student keeps from one step.
    * `history_size`: history x kept_size, the past part (`ObservedSim.history`).
    * `teacher_state_size`: the wrapped env's `state_size`, the teacher's state.

    `goal_indices` stay the wrapped env's, indices into the teacher's state (the exported
    metadata records them so, for controllers that read the full robot state).
    """

    def __init__(self, inner: GoalEnv, spec: ObsSpec):
        spec.check(inner.state_size, f"{inner.name}'s state")
        super().__init__(inner, ("name", "goal_indices", "action_size", "episode_length",
                                 "success_threshold", "backend", "control_period", "termination",
                                 "goal_distribution", "options"))
        self.spec = spec
        self.teacher_state_size = inner.state_size
        self.kept_size = spec.kept_size(inner.state_size)
        self.history_size = spec.history * self.kept_size
        self.state_size = spec.input_state_size(inner.state_size)
        self.layout = f"student input = {spec.describe(inner.state_size)}; teacher: {inner.layout}"
        kept = tuple(range(inner.state_size)) if spec.state_indices is None else spec.state_indices
        #: where each goal element sits in the current kept elements; None where some goal
        #: index is not kept (`_unkept_goal` lists those)
        self._unkept_goal = [i for i in self.goal_indices if i not in kept]
        self._goal_positions = None if self._unkept_goal else tuple(kept.index(i) for i in self.goal_indices)

    def _wrap(self, inner: EnvState, history: jax.Array) -> EnvState:
        obs = self.spec.student_input(inner.obs, history, self.teacher_state_size, jnp)
        return EnvState(sim=ObservedSim(inner=inner, history=history), obs=obs, goal=inner.goal,
                        steps=inner.steps, done=inner.done, terminated=inner.terminated,
                        metrics=inner.metrics)

    def reset(self, key: jax.Array) -> EnvState:
        inner = self.inner.reset(key)
        state = inner.obs[None, : self.teacher_state_size]
        return self._wrap(inner, self.spec.start_history(state, jnp)[0])

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        sim: ObservedSim = state.sim
        history = self.spec.push(sim.history[None], sim.inner.obs[None, : self.teacher_state_size],
                                 jnp)[0]
        return self._wrap(self.inner.step(sim.inner, action), history)

    def achieved_goal(self, state_vec: jax.Array) -> jax.Array:
        """[..., state_size] student state part -> [..., goal_size], read from the current step's
        kept elements (the first kept_size).

        Defined only where the student keeps every teacher state element in `goal_indices`;
        otherwise the student's observation does not hold the achieved goal, and this raises
        CrlDistillError naming the missing elements (the wrapped env's `achieved_goal` on
        `envs.perturbed.teacher_view` always works).
        """
        if self._goal_positions is None:
            raise CrlDistillError(
                f"{self.name}: the student's observation ({self.spec.describe(self.teacher_state_size)}) "
                f"does not keep teacher state element(s) {self._unkept_goal}, so it holds no "
                f"achieved goal; use the wrapped env's achieved_goal on the teacher's view"
            )
        return state_vec[..., jnp.asarray(self._goal_positions)]

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
                "student_obs": self.spec.to_dict(), "teacher_state_size": self.teacher_state_size}


def observed(env: GoalEnv, spec: ObsSpec | None) -> GoalEnv:
    """`env` itself when the spec keeps the teacher's observation, else the wrapped env."""
    return env if spec is None or spec.is_identity else ObservedEnv(env, spec)


__all__ = ["ObservedEnv", "ObservedSim", "observed"]
