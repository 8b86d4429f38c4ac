"""`crl-distill sweep`: a resumable grid of teacher runs, seeds vmapped, and the paper's figures.

    OUT/d{depth}-w{width}/seed-{s}/     one teacher run per cell and seed (`train_seeds`)
    OUT/d{depth}-w{width}/seed-{s}/students/   with `students`: that teacher's students
    OUT/sweep.json, sweep.md            per cell: parameters, final success and time at goal
                                        (mean over seeds, 95% t-interval), students the same
    OUT/sweep_curves.png                success and time at goal against env steps per cell,
                                        95% bands over seeds
    OUT/sweep_params.png                final success against parameter count (depth and width)

Every cell trains for the same env steps and so the same SGD steps. A rerun skips complete
cells, resumes interrupted ones and recomputes the tables; a cell trained with other settings
stops the sweep with one line naming them (`run_dir.run_complete`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from scipy import stats

from crl_distill.distill.config import DistillConfig
from crl_distill.distill.run import distill
from crl_distill.envs import make
from crl_distill.errors import CrlDistillError
from crl_distill.fileio import atomic_write, atomic_write_json
from crl_distill.teacher import configure
from crl_distill.teacher.run_dir import (
    BEST,
    checkpoint_dir,
    is_run_dir,
    read_metrics,
    run_complete,
    seed_run,
)
from crl_distill.teacher.train import teacher_param_counts, train_seeds

METRICS = ("success_any", "time_at_goal")


@dataclass(frozen=True)
class Cell:
    depth: int
    width: int

    @property
    def name(self) -> str:
        return f"d{self.depth}-w{self.width}"


def seed_interval(values: list[float]) -> tuple[float, float]:
    """(mean, 95% half-width) over independent seeds, Student's t with n - 1 degrees of
    freedom (NaN half-width for one seed: no interval from one run)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def run_sweep(env: str, depths: list[int], seeds: list[int], out: str | Path,
              widths: list[int] | None = None, total_env_steps: int | None = None,
              students: str | None = None, distill_config: DistillConfig | None = None,
              progress: bool = True, teacher_overrides: dict[str, Any] | None = None,
              ) -> dict[str, Any]:
    """Train (or continue) every (depth, width) cell with every seed, then aggregate."""
    if not depths or not seeds:
        raise CrlDistillError("a sweep needs at least one depth and one seed")
    make(env)  # one line on a bad name, before anything is written
    out = Path(out)
    widths = widths or [configure(env).actor.width]
    cells = [Cell(d, w) for w in widths for d in depths]
    overrides = teacher_overrides or {}
    cfgs = {c: configure(env, depth=c.depth, width=c.width, total_env_steps=total_env_steps,
                         **overrides) for c in cells}  # validates every cell first
    for c in cells:
        cell_dir = out / c.name
        runs = [seed_run(cell_dir, s) for s in seeds]
        wants = [dataclasses.replace(cfgs[c], seed=s) for s in seeds]
        if all(run_complete(r, w) for r, w in zip(runs, wants, strict=True)):
            continue
        started = [is_run_dir(r) for r in runs]
        if any(started) and not all(started):
            raise CrlDistillError(f"{cell_dir}: only some of its seeds have started; remove it to "
                                  f"retrain the cell")
        train_seeds(None if any(started) else cfgs[c], cell_dir, seeds, resume=any(started),
                    progress=progress, logger="none")
    dcfg = distill_config or DistillConfig()
    student_rows: dict[Cell, list[dict]] = {}
    if students:
        for c in cells:
            student_rows[c] = [
                distill(checkpoint_dir(seed_run(out / c.name, s)) / BEST, students=students,
                        out=seed_run(out / c.name, s) / "students", config=dcfg,
                        progress=False, logger="none").report for s in seeds]
    summary = _aggregate(env, out, cells, cfgs, seeds, student_rows, total_env_steps)
    atomic_write_json(out / "sweep.json", summary)
    text = sweep_markdown(summary)
    atomic_write(out / "sweep.md", lambda f: f.write(text), binary=False)
    plot_sweep(summary, out)
    return summary


def _aggregate(env: str, out: Path, cells: list[Cell], cfgs: dict, seeds: list[int],
               student_rows: dict[Cell, list[dict]], total_env_steps: int | None) -> dict:
    goal_env = make(env)
    rows = []
    for c in cells:
        curves = [read_metrics(seed_run(out / c.name, s)) for s in seeds]
        n = min(len(x) for x in curves)
        row: dict[str, Any] = {
            "cell": c.name, "depth": c.depth, "width": c.width,
            "params": sum(teacher_param_counts(cfgs[c], goal_env).values()),
            "env_steps": [curves[0][i]["env_steps"] for i in range(n)],
            "sgd_steps": curves[0][n - 1]["sgd_steps"] if n else 0,
        }
        for m in METRICS:
            per_epoch = [seed_interval([x[i][f"eval/{m}"] for x in curves]) for i in range(n)]
            row[f"curve/{m}"] = [p[0] for p in per_epoch]
            row[f"curve/{m}_ci95"] = [p[1] for p in per_epoch]
            row[m], row[f"{m}_ci95"] = per_epoch[-1] if per_epoch else (float("nan"),) * 2
            row[f"{m}_per_seed"] = [x[n - 1][f"eval/{m}"] for x in curves]
        for report in student_rows.get(c, []):
            for s in report["students"]:
                row.setdefault("students", {}).setdefault(s["name"], []).append(
                    {m: s[f"eval/{m}"] for m in METRICS})
        for name, per_seed in row.get("students", {}).items():
            summary: dict[str, Any] = {"per_seed": per_seed}
            for m in METRICS:
                summary[m], summary[f"{m}_ci95"] = seed_interval([p[m] for p in per_seed])
            row["students"][name] = summary
        rows.append(row)
    return {"env": env, "seeds": seeds, "total_env_steps": total_env_steps,
            "teacher": {k: v for k, v in cfgs[cells[0]].to_dict().items()
                        if k not in ("actor", "critic", "seed")},
            "cells": rows, "interval": "95% Student-t over seeds, at the last epoch"}


def sweep_markdown(s: dict) -> str:
    names = sorted({n for r in s["cells"] for n in r.get("students", {})})
    head = "| cell | params | SGD steps | success_any | time at goal |" + "".join(
        f" student {n} success_any |" for n in names)
    lines = [f"# crl-distill sweep on {s['env']}, seeds {s['seeds']}", "", head,
             "|" + " --- |" * (5 + len(names))]
    for r in s["cells"]:
        cells = [r["cell"], f"{r['params']:,}", f"{r['sgd_steps']:,}",
                 f"{r['success_any']:.3f} +- {r['success_any_ci95']:.3f}",
                 f"{r['time_at_goal']:.1f} +- {r['time_at_goal_ci95']:.1f}"]
        for n in names:
            st = r.get("students", {}).get(n)
            cells.append(f"{st['success_any']:.3f} +- {st['success_any_ci95']:.3f}" if st else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Intervals: {s['interval']}.", ""]
    return "\n".join(lines)


def plot_sweep(s: dict, out: Path) -> list[Path]:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend that needs no display

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for r in s["cells"]:
        x = np.asarray(r["env_steps"])
        for ax, m in zip(axes, METRICS, strict=True):
            mean = np.asarray(r[f"curve/{m}"])
            half = np.nan_to_num(np.asarray(r[f"curve/{m}_ci95"]))
            (line,) = ax.plot(x, mean, marker="o", ms=3, label=r["cell"])
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    axes[0].set(title=f"{s['env']}: success_any (95% band over {len(s['seeds'])} seeds)",
                xlabel="env steps", ylim=(-0.02, 1.02))
    axes[1].set(title="time at goal", xlabel="env steps")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    curves = out / "sweep_curves.png"
    atomic_write(curves, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for w in sorted({r["width"] for r in s["cells"]}):
        rows = sorted((r for r in s["cells"] if r["width"] == w), key=lambda r: r["params"])
        ax.errorbar([r["params"] for r in rows], [r["success_any"] for r in rows],
                    yerr=[np.nan_to_num(r["success_any_ci95"]) for r in rows], marker="o",
                    capsize=3, label=f"width {w}")
        for r in rows:
            ax.annotate(f"d{r['depth']}", (r["params"], r["success_any"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=8)
    ax.set(xscale="log", xlabel="teacher parameters (actor + phi + psi)",
           ylabel="final success_any", title="final performance against size", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    params = out / "sweep_params.png"
    atomic_write(params, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return [curves, params]


__all__ = ["Cell", "run_sweep", "seed_interval", "sweep_markdown"]

