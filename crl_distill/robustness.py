"""How much trouble an exported policy survives: each perturbation factor swept over levels in
native MuJoCo, the same starts, goals and seeds at every level.

    report = robustness("policy.onnx", episodes=64)    # every factor, `LEVELS`
    report["factors"]["latency"]["breaks_at"]           # first level keeping < 0.8 x clean

Level 0 of every factor is the clean run; retention is time at goal at a level over the clean
time at goal. Model factors and pushes need a file exported from `backend=mjx` (the spring
physics has no MuJoCo model to edit), pushes a robot with a free base: they are skipped, with
the reason, for other files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import env_starts, native_target, run_native
from crl_distill.perturb import MODEL_FIELDS, NONE, Perturbation, has_free_base

#: factor -> its levels; a model factor's level x means the range 1 -+ x
LEVELS: dict[str, tuple[float, ...]] = {
    "obs_noise": (0.0, 0.5, 1.0, 2.0, 4.0),
    "latency": (0.0, 0.01, 0.02, 0.04, 0.08),
    "action_noise": (0.0, 0.05, 0.1, 0.2, 0.4),
    "mass": (0.0, 0.1, 0.2, 0.3, 0.5),
    "friction": (0.0, 0.2, 0.4, 0.6, 0.8),
    "gain": (0.0, 0.1, 0.2, 0.3, 0.5),
    "damping": (0.0, 0.2, 0.4, 0.6, 0.8),
    "push": (0.0, 0.5, 1.0, 2.0, 3.0),
}
RETENTION_FLOOR = 0.8


def spec_at(factor: str, level: float) -> Perturbation:
    """The spec that perturbs only `factor`, at `level` (`LEVELS`' units)."""
    if factor not in LEVELS:
        raise CrlDistillError(f"unknown robustness factor {factor!r}; valid: {', '.join(LEVELS)}")
    if factor == "latency":
        return dataclasses.replace(NONE, obs_latency=level, action_latency=level)
    if factor in MODEL_FIELDS:
        return dataclasses.replace(NONE, **{factor: (1.0 - level, 1.0 + level)})
    return dataclasses.replace(NONE, **{factor: level})


def robustness(onnx_path: str | Path, episodes: int = 64, seed: int = 0,
               factors: list[str] | None = None) -> dict[str, Any]:
    """Time at goal and success_any per factor and level, 95% intervals, in native MuJoCo."""
    if episodes < 2:
        raise CrlDistillError("episodes must be >= 2 for an interval")
    factors = list(LEVELS) if factors is None else factors
    for f in factors:
        spec_at(f, 0.0)
    policy, native, env = native_target(str(onnx_path))
    start = env_starts(env, seed, episodes)

    def run(spec: Perturbation) -> dict[str, Any]:
        return run_native(policy, native, env, start, spec, seed)

    clean = run(NONE)
    out: dict[str, Any] = {"source": str(onnx_path), "env": env.name, "episodes": episodes,
                           "seed": seed, "clean": clean, "retention_floor": RETENTION_FLOOR,
                           "factors": {}, "skipped": {}}
    for f in factors:
        if (f in MODEL_FIELDS or f == "push") and native.get("backend") != "mjx":
            out["skipped"][f] = f"{env.name} is the spring physics: no MuJoCo model to edit"
            continue
        if f == "push" and not has_free_base(np.asarray(env.sys.jnt_type)):
            out["skipped"][f] = f"{env.name} has no free base to push"
            continue
        rows = []
        for level in LEVELS[f]:
            r = clean if level == 0 else run(spec_at(f, level))
            rows.append({"level": level, "spec": spec_at(f, level).describe(), **r,
                         "retention_time_at_goal": (r["time_at_goal"] / clean["time_at_goal"]
                                                    if clean["time_at_goal"] else float("nan"))})
        low = [r["level"] for r in rows if not r["retention_time_at_goal"] >= RETENTION_FLOOR]
        out["factors"][f] = {"levels": rows, "breaks_at": low[0] if low else None}
    return out


def plot_robustness(report: dict[str, Any], path: Path) -> Path:
    """Time at goal and success_any against level per factor, 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["factors"])
    fig, axes = plt.subplots(2, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 5.6),
                             squeeze=False)
    for j, f in enumerate(names):
        rows = report["factors"][f]["levels"]
        x = [r["level"] for r in rows]
        for i, m in enumerate(("time_at_goal", "success_any")):
            y = np.array([r[m] for r in rows])
            h = np.array([r[f"{m}_ci95"] for r in rows])
            ax = axes[i][j]
            ax.plot(x, y, marker="o")
            ax.fill_between(x, y - h, y + h, alpha=0.25)
            if m == "time_at_goal":
                ax.axhline(RETENTION_FLOOR * report["clean"][m], ls="--", c="gray", lw=0.8)
            ax.set(xlabel=f, ylabel=m if j == 0 else None)
    fig.suptitle(f"{Path(report['source']).name} on {report['env']}, native MuJoCo, "
                 f"{report['episodes']} episodes per level")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["LEVELS", "RETENTION_FLOOR", "plot_robustness", "robustness", "spec_at"]
