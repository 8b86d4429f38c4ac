"""One evaluator for every policy: the same env seeds, the same metrics, a 95% interval.

Metrics per episode: time at goal (steps with dist < threshold), success_any (ever reached the
goal), final distance. As in the paper's evaluator, an episode that terminates early (a fallen
robot) stops counting after its terminating step: later steps add no time at goal, and the final
distance is the one at that step. A JAX policy is rolled out inside one jitted `lax.scan`; a host policy
(e.g. onnxruntime) is stepped from Python over the same jitted env functions, so both see
identical starts and goals for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill.envs.base import GoalEnv

#: obs [B, obs_dim] -> action [B, action_size]
BatchPolicy = Callable[[jax.Array], jax.Array]


def episode_keys(seed: int, num_episodes: int) -> jax.Array:
    """Reset keys for evaluation episodes; a function of (seed, episode index) only."""
    return jax.random.split(jax.random.PRNGKey(seed), num_episodes)


def episode_metrics(success: jax.Array, terminated: jax.Array, dist: jax.Array) -> dict[str, jax.Array]:
    """Per-step success, terminated, dist [T, E] -> per-episode time_at_goal, success_any,
    final_dist [E], counting each episode up to and including its first termination."""
    terminated = jnp.asarray(terminated, jnp.float32)
    # counted[t] = 1 while no earlier step terminated the episode.
    counted = jnp.cumprod(jnp.concatenate([jnp.ones_like(terminated[:1]), 1.0 - terminated[:-1]]), 0)
    counted = (counted > 0).astype(jnp.float32)
    success = jnp.asarray(success, jnp.float32) * counted
    last = jnp.sum(counted, 0).astype(jnp.int32) - 1
    return {
        "time_at_goal": success.sum(0),
        "success_any": (success.max(0) > 0).astype(jnp.float32),
        "final_dist": jnp.take_along_axis(jnp.asarray(dist), last[None], 0)[0],
    }


def rollout_jax(env: GoalEnv, policy: BatchPolicy, keys: jax.Array,
                record_obs: bool = False) -> dict[str, jax.Array]:
    """Run one full episode per key with a jittable batch policy (call under jit).

    Returns per-episode arrays [E]: time_at_goal, success_any, final_dist; with `record_obs`
    also the observations the policy saw, obs [T, E, obs_dim].
    """
    state = jax.vmap(env.reset)(keys)

    def body(s, _):
        obs = s.obs
        s = jax.vmap(env.step)(s, policy(obs))
        return s, (s.metrics["success"], s.terminated, s.metrics["dist"], obs if record_obs else None)

    _, (success, terminated, dist, obs) = jax.lax.scan(body, state, None, length=env.episode_length)
    out = episode_metrics(success, terminated, dist)
    if record_obs:
        out["obs"] = obs
    return out


def rollout_host(
    env: GoalEnv, act: Callable[[np.ndarray], np.ndarray], keys: jax.Array, record_obs: bool = False
) -> dict[str, Any]:
    """Like `rollout_jax` but `act` is any host function on numpy arrays (e.g. onnxruntime).

    With `record_obs`, also returns the observations seen, [T, E, obs_dim].
    """
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state = reset(keys)
    steps, seen = [], []
    for _ in range(env.episode_length):
        obs = np.asarray(state.obs)
        if record_obs:
            seen.append(obs)
        state = step(state, jnp.asarray(act(obs)))
        steps.append((state.metrics["success"], state.terminated, state.metrics["dist"]))
    success, terminated, dist = (np.stack(x) for x in zip(*steps, strict=True))
    out: dict[str, Any] = {k: np.asarray(v) for k, v in episode_metrics(success, terminated, dist).items()}
    if record_obs:
        out["obs"] = np.stack(seen)
    return out


def summarize(per_episode: dict[str, Any]) -> dict[str, float]:
    """Means with a normal-approximation 95% interval half-width (`<name>_ci95`)."""
    out: dict[str, float] = {}
    for name, values in per_episode.items():
        if name == "obs":
            continue
        v = np.asarray(values, dtype=np.float64)
        out[name] = float(v.mean())
        out[f"{name}_ci95"] = float(1.96 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    out["episodes"] = float(len(np.asarray(per_episode["success_any"])))
    return out


def evaluate(env: GoalEnv, policy: BatchPolicy, num_episodes: int = 256, seed: int = 0) -> dict:
    """Evaluate a jittable batch policy on `num_episodes` seeded episodes."""
    per_ep = jax.jit(lambda k: rollout_jax(env, policy, k))(episode_keys(seed, num_episodes))
    return summarize(jax.device_get(per_ep))
