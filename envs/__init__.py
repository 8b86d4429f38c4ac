"""Goal-conditioned environments and their registry.

>>> from crl_distill.envs import make
>>> env = make("pointmaze_u")
>>> state = env.reset(jax.random.PRNGKey(0)); state = env.step(state, jnp.zeros(2))
"""

from __future__ import annotations

from collections.abc import Callable

from crl_distill.envs.base import EnvState, GoalEnv, auto_reset
from crl_distill.errors import CrlDistillError


def _pointmaze(maze: str, episode_length: int) -> Callable[[], GoalEnv]:
    def make_env() -> GoalEnv:
        from crl_distill.envs.pointmaze import PointMaze

        return PointMaze(maze, episode_length=episode_length)

    return make_env


def _brax(name: str) -> Callable[[], GoalEnv]:
    def make_env() -> GoalEnv:
        from crl_distill.envs import brax_envs

        return brax_envs.make_brax_env(name)

    return make_env


REGISTRY: dict[str, Callable[[], GoalEnv]] = {
    "pointmaze_u": _pointmaze("u", episode_length=100),
    "pointmaze_big": _pointmaze("big", episode_length=250),
    "pointmaze_hardest": _pointmaze("hardest", episode_length=400),
    **{
        n: _brax(n)
        for n in (
            "reacher",
            "ant",
            "ant_u_maze",
            "ant_big_maze",
            "ant_hardest_maze",
            "ant_u4_maze",
            "ant_u5_maze",
            "humanoid",
            "humanoid_u_maze",
            "humanoid_big_maze",
        )
    },
}


def names() -> list[str]:
    return list(REGISTRY)


def make(name: str) -> GoalEnv:
    """Build the environment called `name`; an unknown name lists the valid ones."""
    try:
        ctor = REGISTRY[name]
    except KeyError:
        raise CrlDistillError(
            f"unknown environment {name!r}; valid names: {', '.join(REGISTRY)}"
        ) from None
    return ctor()


__all__ = ["EnvState", "GoalEnv", "REGISTRY", "auto_reset", "make", "names"]
