"""Episode metrics shared by every evaluator, JAX-free so that the native-MuJoCo evaluator and a
robot-side script can use them with numpy alone.

Per episode: time at goal (steps with dist < threshold), success_any (ever reached the goal),
final distance. As in the paper's evaluator, an episode that terminates early (a fallen robot)
stops counting after its terminating step: later steps add no time at goal, and the final
distance is the one at that step.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def episode_metrics(success: Any, terminated: Any, dist: Any, xp: Any = np) -> dict[str, Any]:
    """Per-step success, terminated, dist [T, E] -> time_at_goal, success_any, final_dist [E].

    `xp` is numpy or jax.numpy (the latter inside jit).
    """
    terminated = xp.asarray(terminated, xp.float32)
    # counted[t] = 1 while no earlier step terminated the episode.
    alive = xp.concatenate([xp.ones_like(terminated[:1]), 1.0 - terminated[:-1]])
    counted = (xp.cumprod(alive, 0) > 0).astype(xp.float32)
    success = xp.asarray(success, xp.float32) * counted
    last = xp.sum(counted, 0).astype(xp.int32) - 1
    return {
        "time_at_goal": success.sum(0),
        "success_any": (success.max(0) > 0).astype(xp.float32),
        "final_dist": xp.take_along_axis(xp.asarray(dist), last[None], 0)[0],
    }


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
