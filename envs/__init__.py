"""Goal-conditioned environments and their registry.

>>> from crl_distill.envs import make
>>> env = make("pointmaze_u")
>>> state = env.reset(jax.random.PRNGKey(0)); state = env.step(state, jnp.zeros(2))
"""

from __future__ import annotations

from collections.abc import Callable

from crl_distill.envs.base import EnvState, GoalEnv, auto_reset
from crl_distill.envs.brax_envs import NAMES as BRAX_NAMES
from crl_distill.errors import CrlDistillError


def _pointmaze(maze: str, episode_length: int) -> Callable[[], GoalEnv]:
    def make_env() -> GoalEnv:
        from crl_distill.envs.pointmaze import PointMaze

        return PointMaze(maze, episode_length=episode_length)

    return make_env


def _arm(name: str) -> Callable[[], GoalEnv]:
    def make_env() -> GoalEnv:
        from crl_distill.envs import arm

        return arm.ARM_MAKERS[name]()

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
    **{n: _brax(n) for n in BRAX_NAMES},
    **{n: _arm(n) for n in ("arm_reach", "arm_push_easy", "arm_push_hard", "arm_binpick_hard")},
}


def names() -> list[str]:
    return list(REGISTRY)


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'ant:goal_dist=4,foo=bar' -> ('ant', {'goal_dist': '4', 'foo': 'bar'})."""
    name, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise CrlDistillError(f"environment option {item!r} in {spec!r} is not key=value")
        opts[key.strip()] = value.strip()
    return name, opts


def make(spec: str) -> GoalEnv:
    """Build the environment named by `spec`: a registered name, optionally followed by options,
    `name:key=value,...` (see each env's `options`, listed by `crl-distill envs`).

    An unknown name lists the valid ones; an unknown or malformed option names the valid ones.
    The env's `name` becomes the spec with its options in canonical order, so a config that
    stores it rebuilds the same env.
    """
    name, opts = split_spec(spec)
    try:
        ctor = REGISTRY[name]
    except KeyError:
        raise CrlDistillError(
            f"unknown environment {name!r}; valid names: {', '.join(REGISTRY)}"
        ) from None
    env = ctor()
    for key, raw in opts.items():
        if key not in env.options:
            valid = ", ".join(env.options) or "none"
            # An option the env's family has but this env leaves out says why (a maze's goal_dist).
            why = getattr(env, "excluded_options", {}).get(key)
            raise CrlDistillError(f"environment {name!r} has no option {key!r}"
                                  + (f": {why}" if why else "") + f" (options: {valid})")
        try:
            setattr(env, key, env.options[key](raw))
        except ValueError:
            raise CrlDistillError(
                f"environment option {key}={raw!r} is not a valid {env.options[key].__name__}"
            ) from None
    if opts:
        try:
            env.check_options()
        except ValueError as e:
            raise CrlDistillError(f"environment {spec!r}: {e}") from None
        env.name = name + ":" + ",".join(f"{k}={getattr(env, k)}" for k in sorted(opts))
    return env


__all__ = ["EnvState", "GoalEnv", "REGISTRY", "auto_reset", "make", "names", "split_spec"]
