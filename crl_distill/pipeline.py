"""The whole job in one call: teacher -> acting mode -> students -> ONNX export + gates ->
latency -> native MuJoCo -> summary.

    out/teacher/            teacher run (resumed if interrupted, skipped if complete)
    out/students/           students (finished ones reused, an interrupted one resumed)
    out/policy.onnx         exported student (skipped if present, valid and from these weights)
    out/latency.json        latency table
    out/native.json         the file in native MuJoCo against the training sim (robot envs)
    out/summary.md, out/summary.png, out/summary.json

On a robot env (one with a native MuJoCo model) the pipeline ends in a robot-ready file: it
trains on the physics that transfers (`ROBOT_PHYSICS`), distills under a robot's trouble
(`robust`, default the `robot` preset), and exports only a file that keeps `min_retention` of
the clean teacher's time at goal under it in native MuJoCo (`export --robust`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from rich.console import Console
from rich.markdown import Markdown

from crl_distill.artifacts import load_artifact
from crl_distill.distill import student_set
from crl_distill.distill.config import DistillConfig
from crl_distill.distill.run import distill, draw_retention
from crl_distill.envs import make, split_spec
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import evaluate, evaluate_native
from crl_distill.export import exported
from crl_distill.export.latency import measure_latency
from crl_distill.export.onnx_export import export
from crl_distill.fileio import atomic_write, atomic_write_json
from crl_distill.loggers import DEFAULT_LOGGER, check_logger
from crl_distill.perturb import Perturbation, parse_perturbation
from crl_distill.teacher import configure
from crl_distill.teacher.acting import Acting
from crl_distill.teacher.run_dir import is_run_dir, read_metrics, run_complete
from crl_distill.teacher.train import load_teacher, train_teacher

#: the physics a robot-ready pipeline trains on, where the env spec does not say: MuJoCo's own
#: solver (the spring ant differs from MuJoCo by 4.6 after one step; the spring reacher cannot
#: take model error), and on CPU the ant's 2 m goals (the largest ant task a 2-core hour trains)
ROBOT_PHYSICS: dict[str, dict[str, str]] = {"reacher": {"backend": "mjx"},
                                            "ant": {"backend": "mjx"}}
ROBOT_PHYSICS_CPU: dict[str, dict[str, str]] = {"ant": {"goal_dist": "2"}}
#: `robust` default: robot envs are distilled and gated under this preset
AUTO = "auto"
ROBOT_PRESET = "robot"


def robot_physics(env: str, platform: str) -> str:
    """`env` with `ROBOT_PHYSICS` (and on CPU `ROBOT_PHYSICS_CPU`) options it does not set."""
    name, opts = split_spec(env)
    extra = {**ROBOT_PHYSICS.get(name, {}),
             **(ROBOT_PHYSICS_CPU.get(name, {}) if platform == "cpu" else {})}
    merged = {**extra, **opts}
    return name + (":" + ",".join(f"{k}={v}" for k, v in merged.items()) if merged else "")


def robot_spec(env: str, robust: str | None) -> str:
    """The perturbation spec a pipeline distills and gates under ("" for none): `robust`, or
    with AUTO the robot preset where `env` has a native MuJoCo model."""
    if robust == AUTO:
        return ROBOT_PRESET if make(env).native_spec() else ""
    spec = parse_perturbation(robust)
    if not spec.is_none and not make(env).native_spec():
        raise CrlDistillError(f"--robust is measured in native MuJoCo: {env} has no native model")
    return "" if spec.is_none else robust


@dataclass
class PipelineResult:
    out: Path
    summary: dict


def run_pipeline(env: str = "pointmaze_u", out: str | Path | None = None, depth: int = 4,
                 students: str = "2x64,2x256", teacher_overrides: dict | None = None,
                 distill_overrides: dict | None = None, episodes: int = 256,
                 parity_episodes: int = 128, seed: int = 0, deep_depth: int = 1000,
                 progress: bool = True, logger: str = DEFAULT_LOGGER,
                 logger_options: dict | None = None, act_samples: int = 16,
                 robust: str | None = AUTO, min_retention: float = 0.8) -> PipelineResult:
    """Run (or continue) every stage into `out`; returns the summary. `logger` mirrors the
    teacher's and the students' metrics live (`crl_distill.loggers`).

    Robot envs (module docstring): `robust` (a perturbation spec; AUTO: the robot preset, None
    or "none": off) is what students are distilled under and the export is gated by, with
    `min_retention`; the env gets `ROBOT_PHYSICS` where its spec leaves them open.

    Acting mode: the teacher's actor and the best of `act_samples` actor samples under its
    critic are evaluated on the same seeds, and the students imitate the critic's choice only
    where it scores no lower on success_any and time at goal and higher on one
    (`pick_acting`); `act_samples=1`, or a `label` in `distill_overrides`, skips the comparison.
    """
    check_logger(logger)
    if not 0 < min_retention <= 1:
        raise CrlDistillError(f"--min-retention must be in (0, 1], got {min_retention}")
    live = {"logger": logger, "logger_options": logger_options}
    say = _say(progress)
    spec = robot_spec(env, robust)
    if spec:
        import jax

        physics = robot_physics(env, jax.default_backend())
        if physics != env:
            say(f"robot-ready: training on {physics} (the physics native MuJoCo runs)")
        env = physics
    out = Path(out) if out is not None else Path("runs") / f"pipeline-{env}-d{depth}"
    t_start = time.perf_counter()
    stage_s: dict[str, float] = {}

    # 1. teacher; from here on every stage uses this one loaded teacher
    t0 = time.perf_counter()
    run = out / "teacher"
    cfg = configure(env, depth=depth, seed=seed, **(teacher_overrides or {}))
    if run_complete(run, cfg):
        say(f"teacher: complete in {run}, skipped")
        curve = read_metrics(run)
    else:
        resume = is_run_dir(run)
        say(f"teacher: resuming {run}" if resume else f"teacher: training depth {depth} on {env}")
        curve = train_teacher(cfg, run, resume=resume, progress=progress, **live).metrics
    teacher = load_teacher(run)
    stage_s["teacher"] = time.perf_counter() - t0

    # 2. acting mode, then students (finished ones with the same settings are reused)
    t0 = time.perf_counter()
    overrides = {**({"perturb": spec} if spec else {}), **(distill_overrides or {})}
    given = DistillConfig(eval_episodes=episodes, seed=seed, **overrides)
    candidates = [given.acting]
    if act_samples > 1 and "label" not in overrides:
        candidates.append(Acting(act_samples))
    evals = [evaluate(teacher.env, teacher.policy(a), episodes, seed) for a in candidates]
    best = pick_acting(evals)
    dcfg = labelling_config(given, candidates[best])
    acting = {"mode": candidates[best].name, "chosen_by": "measured" if len(evals) > 1 else "given",
              "candidates": [{"mode": a.name, **a.to_dict(), **e}
                             for a, e in zip(candidates, evals, strict=True)]}
    say(f"acting: {acting['mode']} (" + ", ".join(
        f"{c['mode']} success_any {c['success_any']:.3f}" for c in acting["candidates"]) + ")")
    stage_s["acting"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dres = distill(teacher, students=students, out=out / "students", config=dcfg,
                   progress=progress, time_jax=False,  # the latency stage times them
                   teacher_eval=evals[best], **live)
    stage_s["students"] = time.perf_counter() - t0

    # 3. export + gates, skipped when the file already holds exactly the picked student
    t0 = time.perf_counter()
    picked = student_set.pick_row(dres.report["students"])
    student_file = dres.student_paths[picked["name"]]
    onnx_path = out / "policy.onnx"
    student = None
    export_report = exported.current_report(onnx_path, picked["params_sha256"])
    if export_report is not None:
        say(f"export: {onnx_path} is valid for {student_file.name}, skipped")
    else:
        res = export(student_file, out=onnx_path, episodes=parity_episodes, seed=seed,
                     robust=spec or None, min_retention=min_retention)
        export_report, student = res.report, res.artifact
    stage_s["export"] = time.perf_counter() - t0

    # 4. latency, measured again whenever the export's weights changed
    t0 = time.perf_counter()
    lat_path = out / "latency.json"
    latency = _read_keyed(lat_path, export_report["params_sha256"], "rows", list)
    if latency is None:
        say("latency: measuring")
        latency = measure_latency(onnx_path, student or load_artifact(student_file), teacher,
                                  deep_depth=deep_depth, onnx_deep=False,
                                  work_dir=out / ".bench", log=say)
        latency["student_params_sha256"] = export_report["params_sha256"]
        atomic_write_json(lat_path, latency)
    stage_s["latency"] = time.perf_counter() - t0

    # 5. native MuJoCo, clean, against the training sim (robot envs), again when weights change
    t0 = time.perf_counter()
    native = None
    if teacher.env.native_spec():
        native_path = out / "native.json"
        native = _read_keyed(native_path, export_report["params_sha256"], "native", dict)
        if native is None:
            say("native MuJoCo: running the file against the training sim")
            native = evaluate_native(str(onnx_path), parity_episodes, seed)
            native["student_params_sha256"] = export_report["params_sha256"]
            atomic_write_json(native_path, native)
        stage_s["native"] = time.perf_counter() - t0

    summary = _summary(out, teacher, curve, dres.report, export_report, latency, stage_s,
                       time.perf_counter() - t_start)
    summary["native"] = native and {k: native[k] for k in ("brax", "native", "ratio", "episodes")}
    summary["robust"] = export_report.get("gates", {}).get("robust")
    summary["acting"] = acting
    atomic_write_json(out / "summary.json", summary)
    text = summary_markdown(summary)
    atomic_write(out / "summary.md", lambda f: f.write(text), binary=False)
    plot_summary(curve, dres.report, latency, out / "summary.png")
    if progress:
        print_summary(summary)
    return PipelineResult(out=out, summary=summary)


ACTING_METRICS = ("success_any", "time_at_goal")


def pick_acting(evals: list[dict[str, float]]) -> int:
    """Index of the acting mode to distil from: evals[0] (the plain actor, the simpler policy to
    ship) unless a later mode scores at least as high on both `ACTING_METRICS` and higher on
    one; among several such, the one with the highest (success_any, time at goal). A mode that
    reaches goals more often but holds them for less time (the critic ranks reaching over
    holding on the reacher, ant and arm) does not replace the actor."""
    def dominates(i: int) -> bool:
        a, b = evals[i], evals[0]
        return (all(a[m] >= b[m] for m in ACTING_METRICS)
                and any(a[m] > b[m] for m in ACTING_METRICS))

    better = [i for i in range(1, len(evals)) if dominates(i)]
    return max(better, key=lambda i: tuple(evals[i][m] for m in ACTING_METRICS), default=0)


def labelling_config(base: DistillConfig, acting: Acting) -> DistillConfig:
    """`base` with the teacher labelling (and scored) as `acting` says."""
    cfg = dataclasses.replace(base, label="critic" if acting.uses_critic else "actor",
                              label_samples=acting.samples if acting.uses_critic
                              else base.label_samples)
    if cfg.acting != acting:
        raise ValueError(f"distill settings cannot express acting {acting.name}")
    return cfg


def _read_keyed(path: Path, params_sha256: str, need: str, kind: type) -> dict | None:
    """The stored result (latency table, native run) if it was measured on these export
    weights and its `need` entry is a `kind`, else None."""
    try:
        stored = json.loads(path.read_text())
        ok = (isinstance(stored, dict) and isinstance(stored.get(need), kind)
              and stored.get("student_params_sha256") == params_sha256)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return stored if ok else None


def _summary(out: Path, teacher: Any, curve: list[dict], report: dict, export_report: dict,
             latency: dict, stage_s: dict, total_s: float) -> dict:
    lat = {r["role"] + "/" + r["kind"]: r for r in latency["rows"]}
    gates = export_report.get("gates", {})
    counts = teacher.param_counts
    return {
        "env": report["env"],
        "teacher": {"depth": teacher.config.actor.depth,
                    "params": sum(counts.values()),
                    "actor_params": counts["actor"],
                    "success_any": report["teacher"]["eval/success_any"],
                    "time_at_goal": report["teacher"]["eval/time_at_goal"],
                    "env_steps": curve[-1]["env_steps"] if curve else 0,
                    "latency_jax_p50_us": lat.get("teacher/jax", {}).get("p50_us"),
                    "latency_jax_p99_us": lat.get("teacher/jax", {}).get("p99_us")},
        "students": [{"name": r["name"], "actor_params": r["actor_params"],
                      "success_any": r["eval/success_any"], "retention": r["retention"]}
                     for r in report["students"]],
        "onnx": {"path": str(out / "policy.onnx"), "student": export_report.get("name"),
                 "numeric_max_abs_diff": gates.get("numeric", {}).get("max_abs_diff"),
                 "closed_loop": {k: gates.get("closed_loop", {}).get(k) for k in
                                 ("success_episodes_jax", "success_episodes_onnx", "episodes",
                                  "action_deviation_max")},
                 "latency_p50_us": latency["summary"]["onnx_student_p50_us"],
                 "latency_p99_us": latency["summary"]["onnx_student_p99_us"]},
        "latency_rows": latency["rows"],
        "stage_seconds": stage_s, "total_seconds": total_s,
    }


def summary_markdown(s: dict) -> str:
    t, o = s["teacher"], s["onnx"]
    cl = o["closed_loop"]
    lines = [
        f"# crl-distill pipeline on {s['env']}", "",
        "| model | params (actor) | success_any | retention | latency p50 / p99 (us) |",
        "| --- | --- | --- | --- | --- |",
        f"| teacher depth {t['depth']} (JAX) | {t['actor_params']:,} | {t['success_any']:.3f} | "
        f"1.00 | {t['latency_jax_p50_us']:.0f} / {t['latency_jax_p99_us']:.0f} |",
    ]
    for r in s["students"]:
        mark = " (exported)" if r["name"] == o["student"] else ""
        lat = f"{o['latency_p50_us']:.1f} / {o['latency_p99_us']:.1f} (ONNX)" if mark else "-"
        lines.append(f"| student {r['name']}{mark} | {r['actor_params']:,} | "
                     f"{r['success_any']:.3f} | {r['retention']:.2f} | {lat} |")
    lines += [
        "", f"ONNX file: `{o['path']}`; numeric parity max |diff| {o['numeric_max_abs_diff']:.2e} "
        f"(batch 1/2/7/64); closed loop: {cl['success_episodes_onnx']}/{cl['episodes']} "
        f"successes with onnxruntime vs {cl['success_episodes_jax']}/{cl['episodes']} in JAX, "
        f"max per-step action deviation {cl['action_deviation_max']:.1e}.", "",
        *([f"Teacher acting mode ({s['acting']['chosen_by']}): **{s['acting']['mode']}**; "
           "students imitate it (the critic's choice replaces the actor only when no worse in "
           "success_any and time at goal and better in one). " + "; ".join(
               f"{c['mode']}: success_any {c['success_any']:.3f}, time at goal "
               f"{c['time_at_goal']:.1f}" for c in s["acting"]["candidates"]) + ".", ""]
          if "acting" in s else []),
        *(_robot_lines(s) if s.get("native") or s.get("robust") else []),
        "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["stage_seconds"].items())
        + f"; total {s['total_seconds']:.0f}.", "",
    ]
    return "\n".join(lines)


def _robot_lines(s: dict) -> list[str]:
    lines = []
    if s.get("native"):
        n = s["native"]
        lines.append(f"Native MuJoCo, clean ({n['episodes']} episodes, the same starts): time at goal "
                     f"{n['native']['time_at_goal']:.1f} against {n['brax']['time_at_goal']:.1f} in the "
                     f"training sim (native / training {n['ratio']['time_at_goal']:.2f}), success_any "
                     f"{n['native']['success_any']:.3f} against {n['brax']['success_any']:.3f}.")
    if s.get("robust"):
        r = s["robust"]
        spec = Perturbation.from_dict(r["perturbation"])
        lines.append(f"Robustness gate, native MuJoCo under {spec.name} ({spec.describe()}): time at "
                     f"goal {r['native']['time_at_goal']:.1f} +- {r['native']['time_at_goal_ci95']:.1f}"
                     f" = {r['retention_time_at_goal']:.2f} x the clean teacher's "
                     f"{r['teacher_time_at_goal']:.1f} (min {r['min_retention']:g}): passed.")
    return [x for line in lines for x in (line, "")]


def print_summary(s: dict) -> None:
    Console(width=120).print(Markdown(summary_markdown(s)))


def plot_summary(curve: list[dict], report: dict, latency: dict, path: Path) -> Path:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend that needs no display

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot([r["env_steps"] for r in curve], [r["eval/success_any"] for r in curve],
               marker="o")
    ax[0].set(title="teacher learning curve", xlabel="env steps", ylabel="success_any",
              ylim=(-0.02, 1.02))
    draw_retention(ax[1], report["students"])
    ax[1].set(title="student retention vs size")
    lat = latency["rows"]
    ax[2].barh(range(len(lat)), [r["p50_us"] for r in lat],
               color=["C0" if r["kind"] == "onnx" else "C1" for r in lat])
    ax[2].set_yticks(range(len(lat)), [r["model"] for r in lat], fontsize=7)
    ax[2].set(xscale="log", title="batch-1 latency p50 (us)")
    ax[2].invert_yaxis()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def _say(enabled: bool):
    if not enabled:
        return lambda _m: None
    c = Console(stderr=True)
    return lambda m: c.print(f"[bold cyan]pipeline[/] {m}", highlight=False)


__all__ = ["PipelineResult", "run_pipeline"]
