"""The whole job in one call: teacher -> students -> ONNX export + gates -> latency -> summary.

    out/teacher/            teacher run (resumed if interrupted, skipped if complete)
    out/students/           students (finished ones reused, an interrupted one resumed)
    out/policy.onnx         exported student (skipped if present, valid and from these weights)
    out/latency.json        latency table
    out/summary.md, out/summary.png, out/summary.json
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crl_distill.errors import CrlDistillError
from crl_distill.fileio import atomic_write, atomic_write_json
from crl_distill.loggers import DEFAULT_LOGGER, check_logger


@dataclass
class PipelineResult:
    out: Path
    summary: dict


def _teacher_complete(run: Path, want: Any) -> bool:
    """The run finished with exactly the requested config; one clear error if it holds another."""
    from crl_distill.teacher.run_dir import run_complete

    return run_complete(run, want)


def _export_valid(path: Path, student_file: Path) -> bool:
    """The ONNX file loads, passed its gates, and holds exactly this student's weights."""
    if not path.is_file():
        return False
    try:
        from crl_distill.export.onnx_export import params_sha256
        from crl_distill.runtime import OnnxPolicy
        from crl_distill.student.model import load_student

        meta = OnnxPolicy(path).metadata
        return (not meta.get("gates_skipped") and meta.get("params_sha256")
                == params_sha256(load_student(student_file).params))
    except CrlDistillError:
        return False


def run_pipeline(env: str = "pointmaze_u", out: str | Path | None = None, depth: int = 4,
                 students: str = "2x64,2x256", teacher_overrides: dict | None = None,
                 distill_overrides: dict | None = None, episodes: int = 256,
                 parity_episodes: int = 128, seed: int = 0, deep_depth: int = 1000,
                 progress: bool = True, logger: str = DEFAULT_LOGGER,
                 logger_options: dict | None = None) -> PipelineResult:
    """Run (or continue) every stage into `out`; returns the summary. `logger` mirrors the
    teacher's and the students' metrics live (`crl_distill.loggers`)."""
    check_logger(logger)
    live = {"logger": logger, "logger_options": logger_options}
    from crl_distill.distill import DistillConfig, distill
    from crl_distill.export import export
    from crl_distill.export.latency import run_latency_benchmark
    from crl_distill.teacher import configure, train_teacher
    from crl_distill.teacher.run_dir import is_run_dir

    out = Path(out) if out is not None else Path("runs") / f"pipeline-{env}-d{depth}"
    say = _say(progress)
    t_start = time.perf_counter()
    stage_s: dict[str, float] = {}

    # 1. teacher
    t0 = time.perf_counter()
    run = out / "teacher"
    cfg = configure(env, depth=depth, seed=seed, **(teacher_overrides or {}))
    if _teacher_complete(run, cfg):
        say(f"teacher: complete in {run}, skipped")
    elif is_run_dir(run):
        say(f"teacher: resuming {run}")
        train_teacher(cfg, run, resume=True, progress=progress, **live)
    else:
        say(f"teacher: training depth {depth} on {env}")
        train_teacher(cfg, run, progress=progress, **live)
    stage_s["teacher"] = time.perf_counter() - t0

    # 2. students (finished ones with the same settings are reused)
    t0 = time.perf_counter()
    dcfg = DistillConfig(eval_episodes=episodes, seed=seed, **(distill_overrides or {}))
    dres = distill(run, students=students, out=out / "students", config=dcfg, progress=progress,
                   **live)
    stage_s["students"] = time.perf_counter() - t0

    # 3. export + gates
    t0 = time.perf_counter()
    from crl_distill.export.onnx_export import pick_student

    student_file = pick_student(out / "students", None)
    onnx_path = out / "policy.onnx"
    if _export_valid(onnx_path, student_file):
        say(f"export: {onnx_path} is valid for {student_file.name}, skipped")
        export_report = json.loads((out / "export_report.json").read_text())
    else:
        export_report = export(student_file, out=onnx_path, episodes=parity_episodes,
                               seed=seed).report
    stage_s["export"] = time.perf_counter() - t0

    # 4. latency
    t0 = time.perf_counter()
    lat_path = out / "latency.json"
    latency = None
    if lat_path.is_file():
        try:
            latency = json.loads(lat_path.read_text())
            # Measured on this very export (its weights), not merely on a file at this path.
            if latency.get("student_params_sha256") != export_report.get("params_sha256"):
                latency = None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            latency = None
    if latency is None:
        say("latency: measuring")
        latency = run_latency_benchmark(onnx_path, run, deep_depth=deep_depth, onnx_deep=False,
                                        work_dir=out / ".bench", log=say)
        latency["student_params_sha256"] = export_report.get("params_sha256")
        atomic_write_json(lat_path, latency)
    stage_s["latency"] = time.perf_counter() - t0

    summary = _summary(out, run, dres.report, export_report, latency, stage_s,
                       time.perf_counter() - t_start)
    atomic_write_json(out / "summary.json", summary)
    text = summary_markdown(summary)
    atomic_write(out / "summary.md", lambda f: f.write(text), binary=False)
    plot_summary(run, dres.report, latency, out / "summary.png")
    if progress:
        print_summary(summary)
    return PipelineResult(out=out, summary=summary)


def _summary(out: Path, run: Path, report: dict, export_report: dict, latency: dict,
             stage_s: dict, total_s: float) -> dict:
    from crl_distill.teacher.run_dir import read_metrics, read_run_info

    teacher_cfg = read_run_info(run)
    rows = read_metrics(run)
    lat = {r["role"] + "/" + r["kind"]: r for r in latency["rows"]}
    gates = export_report.get("gates", {})
    return {
        "env": report["env"],
        "teacher": {"depth": teacher_cfg["teacher"]["actor"]["depth"],
                    "params": sum(teacher_cfg["params"].values()),
                    "actor_params": teacher_cfg["params"]["actor"],
                    "success_any": report["teacher"]["eval/success_any"],
                    "time_at_goal": report["teacher"]["eval/time_at_goal"],
                    "env_steps": rows[-1]["env_steps"] if rows else 0,
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
        "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["stage_seconds"].items())
        + f"; total {s['total_seconds']:.0f}.", "",
    ]
    return "\n".join(lines)


def print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    Console(width=120).print(Markdown(summary_markdown(s)))


def plot_summary(run: Path, report: dict, latency: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crl_distill.teacher.run_dir import read_metrics

    rows = read_metrics(run)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot([r["env_steps"] for r in rows], [r["eval/success_any"] for r in rows], marker="o")
    ax[0].set(title="teacher learning curve", xlabel="env steps", ylabel="success_any",
              ylim=(-0.02, 1.02))
    st = sorted((r for r in report["students"] if r["retention"] == r["retention"]),
                key=lambda r: r["actor_params"])  # NaN retention: the teacher never succeeded
    ax[1].plot([r["actor_params"] for r in st], [r["retention"] for r in st], marker="o")
    for r in st:
        ax[1].annotate(r["name"], (r["actor_params"], r["retention"]), xytext=(4, 4),
                       textcoords="offset points", fontsize=8)
    ax[1].axhline(0.95, color="C3", ls=":", lw=0.8)
    ax[1].set(title="student retention vs size", xscale="log" if st else "linear",
              xlabel="actor params",
              ylabel="success_any student / teacher")
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
    from rich.console import Console

    c = Console(stderr=True)
    return lambda m: c.print(f"[bold cyan]pipeline[/] {m}", highlight=False)


__all__ = ["PipelineResult", "run_pipeline"]
