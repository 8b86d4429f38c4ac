"""The goal-conditioned environment API shared by every stage.

An environment is a frozen description plus two pure functions, `reset(key)` and
`step(state, action)`, both jittable and vmappable. Observations are `concat(state, goal)`;
the achieved goal is `state[goal_indices]`. An episode ends after `episode_length` steps, or
earlier where the env terminates it (a robot that has fallen over: `_terminated`), as the
paper's environments do; `done` marks either end and `terminated` the early one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EnvState:
    """One environment's state; every array field gains a leading axis under vmap.

    sim:     backend physics state (pytree), opaque to callers.
    obs:     [state_size + goal_size] float32, `concat(state, goal)`.
    goal:    [goal_size] float32, the commanded goal.
    steps:   [] int32, steps taken in the current episode.
    done:    [] float32, 1.0 once `steps == episode_length` or the episode terminated early.
    terminated: [] float32, 1.0 when the last step ended the episode early (`_terminated`).
    metrics: {"dist": [] float32, "success": [] float32}.
    """

    sim: Any
    obs: jax.Array
    goal: jax.Array
    steps: jax.Array
    done: jax.Array
    terminated: jax.Array
    metrics: dict[str, jax.Array]


class GoalEnv:
    """Base class: subclasses set the size attributes and implement `_reset` and `_step`.

    Class attributes are plain Python values so that sizes are known without building physics
    (`crl-distill envs` lists every environment in well under a second).
    """

    name: str = ""
    state_size: int = 0
    goal_indices: tuple[int, ...] = ()
    action_size: int = 0
    episode_length: int = 1000
    success_threshold: float = 0.5
    backend: str = "jax"
    #: seconds of simulated time per step (the control period a deployed policy must keep).
    control_period: float = 0.05
    #: human-readable observation layout, shown by `crl-distill envs`.
    layout: str = ""
    #: when an episode ends early (`_terminated`), in words; "none" where it never does.
    termination: str = "none"
    #: where starts and goals are drawn from, in words.
    goal_distribution: str = ""
    #: the paper's code's state size where it differs from ours (see the env's docstring)
    reference_state_size: int | None = None
    #: per state element: name and unit (empty: "state_<i>", unitless); actuator names
    state_names: tuple[str, ...] = ()
    state_units: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    #: options a caller may set by name (`make("ant:goal_dist=4")`): name -> type.
    options: dict[str, type] = {}

    @property
    def jit_options(self) -> dict[str, Any]:
        """XLA compiler options for `jax.jit(..., compiler_options=env.jit_options)` of any
        function that steps this env; {} where the defaults are best."""
        return {}

    @property
    def goal_size(self) -> int:
        return len(self.goal_indices)

    @property
    def observation_size(self) -> int:
        return self.state_size + self.goal_size

    @property
    def action_bounds(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    # -- subclass hooks -------------------------------------------------------------------
    def _reset(self, key: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        """Return (sim, state_vec [state_size], goal [goal_size])."""
        raise NotImplementedError

    def _step(self, sim: Any, action: jax.Array) -> tuple[Any, jax.Array]:
        """Advance physics by one control step; return (sim, state_vec)."""
        raise NotImplementedError

    def check_options(self) -> None:
        """Raise ValueError naming the problem when an option set by `make` is out of range."""

    def native_spec(self) -> dict[str, Any] | None:
        """How `crl_distill.native` runs this env in MuJoCo's C engine; None: it cannot."""
        return None

    def _terminated(self, sim: Any, state_vec: jax.Array) -> jax.Array:
        """[] bool: the episode ends now, before its time limit. Default: never."""
        return jnp.zeros((), bool)

    # -- public API -----------------------------------------------------------------------
    def reset(self, key: jax.Array) -> EnvState:
        sim, state_vec, goal = self._reset(key)
        return self._pack(sim, state_vec, goal, jnp.zeros((), jnp.int32), jnp.zeros((), bool))

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        lo, hi = self.action_bounds
        action = jnp.clip(jnp.nan_to_num(action.astype(jnp.float32)), lo, hi)
        sim, state_vec = self._step(state.sim, action)
        terminated = self._terminated(sim, state_vec)
        return self._pack(sim, state_vec, state.goal, state.steps + 1, terminated)

    def achieved_goal(self, state_vec: jax.Array) -> jax.Array:
        """[..., state_size] -> [..., goal_size]."""
        return state_vec[..., jnp.asarray(self.goal_indices)]

    def goal_distance(self, achieved: jax.Array, goal: jax.Array) -> jax.Array:
        """[..., goal_size] x [..., goal_size] -> [...] Euclidean distance."""
        return jnp.linalg.norm(achieved - goal, axis=-1)

    def _pack(self, sim: Any, state_vec: jax.Array, goal: jax.Array, steps: jax.Array,
              terminated: jax.Array) -> EnvState:
        state_vec = state_vec.astype(jnp.float32)
        goal = goal.astype(jnp.float32)
        dist = self.goal_distance(self.achieved_goal(state_vec), goal)
        return EnvState(
            sim=sim,
            obs=jnp.concatenate([state_vec, goal]),
            goal=goal,
            steps=steps,
            done=((steps >= self.episode_length) | terminated).astype(jnp.float32),
            terminated=terminated.astype(jnp.float32),
            metrics={"dist": dist, "success": (dist < self.success_threshold).astype(jnp.float32)},
        )

    def interface(self) -> dict[str, list[dict[str, Any]]]:
        """The observation and action, element by element: {"observation": [{name, unit,
        source}], "action": [{name, low, high}]}, in the order the policy sees them."""
        names = self.state_names or tuple(f"state_{i}" for i in range(self.state_size))
        units = self.state_units or ("",) * self.state_size
        obs = [{"name": n, "unit": u, "source": "state"} for n, u in zip(names, units, strict=True)]
        obs += [{"name": f"goal_{names[i]}", "unit": units[i], "source": "goal"}
                for i in self.goal_indices]
        lo, hi = self.action_bounds
        acts = self.action_names or tuple(f"action_{i}" for i in range(self.action_size))
        return {"observation": obs, "action": [{"name": n, "low": lo, "high": hi} for n in acts]}

    def describe(self) -> dict[str, Any]:
        """Static facts about the environment (no physics is built)."""
        return {
            "name": self.name,
            "observation_size": self.observation_size,
            "state_size": self.state_size,
            "goal_size": self.goal_size,
            "goal_indices": list(self.goal_indices),
            "action_size": self.action_size,
            "episode_length": self.episode_length,
            "success_threshold": self.success_threshold,
            "backend": self.backend,
            "control_period": self.control_period,
            "termination": self.termination,
            "goal_distribution": self.goal_distribution,
            "options": {k: getattr(self, k) for k in self.options},
            "layout": self.layout,
        }


class WrappedEnv(GoalEnv):
    """A GoalEnv over another, `inner`, that changes what the policy sees (`observed.py`,
    `perturbed.py`): physics, XLA options, action bounds and the native model stay inner's."""

    def __init__(self, inner: GoalEnv, attrs: tuple[str, ...]):
        self.inner = inner
        for attr in attrs:  # the plain values that describe the robot, as inner has them
            setattr(self, attr, getattr(inner, attr))

    @property
    def jit_options(self) -> dict[str, Any]:
        return self.inner.jit_options

    @property
    def action_bounds(self) -> tuple[float, float]:
        return self.inner.action_bounds

    def native_spec(self) -> dict[str, Any] | None:
        return self.inner.native_spec()


def auto_reset(env: GoalEnv, state: EnvState, key: jax.Array) -> EnvState:
    """Replace a finished episode with a fresh one (new start and goal); unbatched."""
    fresh = env.reset(key)
    return jax.tree_util.tree_map(lambda f, s: jnp.where(state.done > 0, f, s), fresh, state)
