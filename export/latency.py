"""Inference latency of students and teachers, ONNX and JAX, measured side by side in one run.

Batch-1 latency is reported as p50 / p99 / max over many calls on one thread (the control-loop
case); throughput as observations per second at batch 64 and 1024. For the JAX rows to be
single-threaded, XLA_FLAGS must be set before JAX is imported (`single_thread_xla_flags`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from rich.console import Console
from rich.table import Table

from crl_distill.artifacts import Artifact, load_artifact, teacher_artifact
from crl_distill.envs import make
from crl_distill.evaluation import BatchPolicy, Policy, first_step
from crl_distill.export.onnx_export import export
from crl_distill.export.trace import trace_onnx, trace_ungated
from crl_distill.fileio import atomic_write_bytes, file_sha256
from crl_distill.runtime import OnnxPolicy, SessionStepper, read_metadata
from crl_distill.teacher.acting import ACTOR
from crl_distill.teacher.config import NetConfig, TeacherConfig
from crl_distill.teacher.crl import CRL
from crl_distill.teacher.run_dir import checkpoint_dir
from crl_distill.teacher.train import Teacher, load_teacher
from crl_distill.timing import time_calls


def profile(name: str, fn_for_batch: Callable[[int], Callable[[np.ndarray], Any]], obs_size: int,
            n_batch1: int = 3000, throughput_batches: tuple[int, ...] = (64, 1024),
            budget_s: float = 5.0) -> dict[str, Any]:
    """Latency percentiles at batch 1 and throughput at larger batches for one model."""
    rng = np.random.default_rng(0)
    fn1 = fn_for_batch(1)
    x1 = rng.normal(size=(1, obs_size)).astype(np.float32)
    probe = time_calls(fn1, x1, 5, warmup=3)  # slow models get fewer calls
    n = int(max(20, min(n_batch1, budget_s / max(float(np.median(probe)), 1e-7))))
    t = time_calls(fn1, x1, n, warmup=min(50, n))
    row: dict[str, Any] = {"model": name, "calls": n, "p50_us": float(np.median(t) * 1e6),
                           "p99_us": float(np.quantile(t, 0.99) * 1e6), "max_us": float(t.max() * 1e6)}
    for b in throughput_batches:
        fnb = fn_for_batch(b)
        xb = rng.normal(size=(b, obs_size)).astype(np.float32)
        probe = time_calls(fnb, xb, 2, warmup=2)
        reps = int(max(3, min(200, budget_s / 2 / max(float(np.median(probe)), 1e-7))))
        tb = time_calls(fnb, xb, reps, warmup=2)
        row[f"throughput_b{b}"] = float(b / np.median(tb))
    return row


def onnx_runner(path: str | Path) -> Callable[[int], Callable[[np.ndarray], Any]]:
    """The deployed path: OnnxPolicy.act (validation included), one intra-op thread."""
    policy = OnnxPolicy(path)
    return lambda _b: policy.act


def onnx_raw_runner(path: str | Path) -> Callable[[int], Callable[[np.ndarray], Any]]:
    """onnxruntime's session.run alone (no input checks), one intra-op thread; a recurrent
    file's state is fed and read back as a control loop does."""
    policy = OnnxPolicy(path)
    return lambda _b: SessionStepper(policy.session, policy.recurrent)


def jax_runner(policy: Policy) -> Callable[[int], Callable[[np.ndarray], Any]]:
    """A jitted JAX policy (a recurrent one: one step from its zero carry); the result is
    waited for (block_until_ready)."""
    f = jax.jit(first_step(policy))
    return lambda _b: (lambda x: f(x).block_until_ready())


def random_teacher_policy(env_name: str, depth: int, width: int = 256,
                          traceable: bool = False) -> BatchPolicy:
    """A teacher's deterministic actor of the given depth with random weights (latency
    depends on shape only); `traceable` for ONNX, as `CRL.acting_policy`."""
    env = make(env_name)
    crl = CRL(TeacherConfig(env=env_name, actor=NetConfig(depth, width)), env)
    params = {"actor": crl.actor.init(jax.random.PRNGKey(0), jnp.zeros((1, env.observation_size)))}
    return crl.acting_policy(params, ACTOR, traceable)


def _export_random_teacher(env_name: str, depth: int, path: Path, width: int = 256) -> Path:
    """ONNX file of a random-weight teacher actor, traced through the unrolled forward."""
    model = trace_onnx(random_teacher_policy(env_name, depth, width, traceable=True),
                       make(env_name).observation_size, f"crl_distill_teacher_d{depth}")
    atomic_write_bytes(path, model.SerializeToString())
    return path


def _local_source(meta: dict, key: str, dirs: list[Path]) -> Path | None:
    """The file an export was made from, found by the name it records in one of `dirs`, and
    only if its bytes still hash to what was recorded (exports keep names, not paths)."""
    name, want = meta.get(key), meta.get(f"{key}_sha256")
    if not isinstance(name, str) or not name or Path(name).name != name:
        return None
    for d in dirs:
        p = d / name
        if p.is_file() and (want is None or file_sha256(p) == want):
            return p
    return None


def run_latency_benchmark(student_source: str | Path, teacher_source: str | Path | None = None,
                          deep_depth: int = 1000, onnx_deep: bool = True,
                          work_dir: str | Path | None = None, budget_s: float = 4.0,
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every model of the latency table, measured in this one process, from files.

    student_source: an exported student .onnx (its JAX row needs the student file beside the
    export or in ../students), or a student dir/file (exported here first).
    teacher_source: a teacher run or checkpoint (default: the one the export records, found by
    name and hash beside the students); without one, the teacher rows are left out.
    """
    work = Path(work_dir or tempfile.mkdtemp(prefix="crl-bench-"))
    src = Path(student_source)
    if src.suffix == ".onnx":
        meta = read_metadata(src)  # validates the file and its metadata
        # Beside the file (export's default), or the pipeline's layout (OUT/students/).
        found = _local_source(meta, "source", [src.parent, src.parent / "students"])
        student_onnx, student = src, load_artifact(found) if found else None
    else:
        res = export(src, out=work / "student.onnx", episodes=16)
        student_onnx, student = res.path, res.artifact
    if teacher_source is None:
        # RUN/students/ (distill's default) or OUT/teacher/ beside OUT/students/ (the pipeline).
        sdir = student.source.parent if student is not None else src.parent
        teacher_source = _local_source(read_metadata(student_onnx), "teacher_source", [
            checkpoint_dir(sdir.parent), checkpoint_dir(sdir.parent / "teacher"), sdir.parent])
    teacher = load_teacher(teacher_source) if teacher_source is not None else None
    return measure_latency(student_onnx, student, teacher, deep_depth=deep_depth,
                           onnx_deep=onnx_deep, work_dir=work, budget_s=budget_s, log=log)


def measure_latency(student_onnx: Path, student: Artifact | None = None,
                    teacher: Teacher | None = None,
                    deep_depth: int = 1000, onnx_deep: bool = True,
                    work_dir: str | Path | None = None, budget_s: float = 4.0,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """The latency table from what a caller already holds: the exported student file, the
    student as an artifact (its JAX row; None leaves it out) and a loaded `Teacher` acting as
    its actor (its JAX row and its ONNX row, traced here without the export gates; None leaves
    them out)."""
    work = Path(work_dir or tempfile.mkdtemp(prefix="crl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    meta = OnnxPolicy(student_onnx).metadata  # validates the file and its metadata
    env_name, obs_size = meta["env"], int(meta["observation_size"])
    rows = []

    def add(name: str, runner: Callable, **extra: Any) -> None:
        log(f"measuring {name} ...")
        rows.append({**profile(name, runner, obs_size, budget_s=budget_s), **extra})

    add(f"onnx student {meta['name']} (OnnxPolicy.act)", onnx_runner(student_onnx), kind="onnx",
        role="student")
    add(f"onnx student {meta['name']} (session.run)", onnx_raw_runner(student_onnx), kind="onnx",
        role="student")
    if student is not None:
        add(f"jax student {meta['name']}", jax_runner(student.policy()), kind="jax",
            role="student")
    if teacher is not None:
        t = teacher_artifact(teacher)
        add(f"jax {t.name}", jax_runner(t.policy()), kind="jax", role="teacher")
        traced = trace_ungated(t, "traced for latency only")
        t_onnx = atomic_write_bytes(work / "teacher.onnx", traced.SerializeToString())
        add(f"onnx {t.name}", onnx_runner(t_onnx), kind="onnx", role="teacher")
    add(f"jax teacher-d{deep_depth} (random weights)",
        jax_runner(random_teacher_policy(env_name, deep_depth)), kind="jax", role="deep_teacher")
    if onnx_deep:
        log(f"exporting a depth-{deep_depth} teacher to ONNX ...")
        deep = _export_random_teacher(env_name, deep_depth, work / f"teacher-d{deep_depth}.onnx")
        add(f"onnx teacher-d{deep_depth} (random weights)", onnx_runner(deep), kind="onnx",
            role="deep_teacher")
    student_row = rows[0]
    deep_jax = next(r for r in rows if r["role"] == "deep_teacher" and r["kind"] == "jax")
    summary = {
        "onnx_student_p50_us": student_row["p50_us"], "onnx_student_p99_us": student_row["p99_us"],
        "target_p50_us": 30.0, "target_p99_us": 100.0,
        "p50_target_met": student_row["p50_us"] <= 30.0,
        "p99_target_met": student_row["p99_us"] <= 100.0,
        f"jax_teacher_d{deep_depth}_over_onnx_student_p50":
            deep_jax["p50_us"] / student_row["p50_us"],
        "speedup_target": 100.0,
    }
    summary["speedup_target_met"] = summary[
        f"jax_teacher_d{deep_depth}_over_onnx_student_p50"] >= 100.0
    return {"env": env_name, "student_onnx": Path(student_onnx).name, "rows": rows,
            "summary": summary}


def print_latency_table(result: dict[str, Any]) -> None:
    table = Table(title=f"inference latency on {result['env']} (batch 1, one thread)")
    for col in ("model", "p50 us", "p99 us", "max us", "obs/s @64", "obs/s @1024"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for r in result["rows"]:
        table.add_row(r["model"], f"{r['p50_us']:,.1f}", f"{r['p99_us']:,.1f}",
                      f"{r['max_us']:,.0f}", f"{r['throughput_b64']:,.0f}",
                      f"{r['throughput_b1024']:,.0f}")
    Console(width=120).print(table)
    s = result["summary"]
    ratio_key = next(k for k in s if k.endswith("_over_onnx_student_p50"))
    Console(width=120).print(
        f"ONNX student p50 {s['onnx_student_p50_us']:.1f} us (target <= 30: "
        f"{'met' if s['p50_target_met'] else 'NOT met'}), p99 {s['onnx_student_p99_us']:.1f} us "
        f"(target <= 100: {'met' if s['p99_target_met'] else 'NOT met'}); deep teacher / student "
        f"p50 = {s[ratio_key]:,.0f}x (target >= 100: "
        f"{'met' if s['speedup_target_met'] else 'NOT met'})", highlight=False)


def plot_latency(result: dict[str, Any], path: str | Path) -> Path:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend that needs no display

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    y = np.arange(len(rows))
    p50 = [r["p50_us"] for r in rows]
    p99 = [r["p99_us"] for r in rows]
    ax.barh(y, p50, color=["C0" if r["kind"] == "onnx" else "C1" for r in rows])
    ax.errorbar(p99, y, fmt="k|", markersize=12, label="p99")
    ax.set_yticks(y, [r["model"] for r in rows], fontsize=8)
    ax.set(xscale="log", xlabel="batch-1 latency (us, log scale; bar = p50, tick = p99)",
           title=f"{result['env']}: ONNX (blue) vs JAX (orange), one thread")
    ax.axvline(30, color="C3", ls=":", lw=0.8)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
