"""`distill(teacher, students=...)`: train students, evaluate them beside the teacher, report.

The files it writes, a student set, belong to `crl_distill.distill.student_set`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill import __version__
from crl_distill.checkpoint import load_pytree, params_sha256, save_pytree
from crl_distill.dirlock import releases_locks
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import evaluate
from crl_distill.fileio import atomic_write
from crl_distill.loggers import DEFAULT_LOGGER, check_logger, make_logger
from crl_distill.obs_spec import ObsSpec
from crl_distill.student.model import (
    StudentConfig,
    count_params,
    load_student,
    parse_students,
    policy_flops,
    save_student,
)
from crl_distill.teacher.networks import deterministic_policy, param_count
from crl_distill.teacher.run_dir import run_of
from crl_distill.teacher.train import Teacher, load_teacher
from crl_distill.timing import percentiles_us, time_calls

from . import student_set
from .dagger import DistillConfig, Distiller


@dataclass
class DistillResult:
    out_dir: Path
    report: dict
    student_paths: dict[str, Path]


def resolve_teacher(source: str | Path | Teacher, env: str | None = None) -> Teacher:
    """A Teacher from a run dir / checkpoint / reference .pkl / Teacher.

    `env`, when given, must match the teacher's; a reference .pkl needs it (the pickle does
    not say which env it was trained on) and is converted on the fly.
    """
    if isinstance(source, str | Path) and Path(source).suffix == ".pkl":
        import tempfile

        from crl_distill.teacher.reference_import import import_reference

        if env is None:
            raise CrlDistillError(f"{source}: a reference .pkl needs --env (it does not record "
                                  f"its environment)")
        run = import_reference(source, env, Path(tempfile.mkdtemp(prefix="crl-import-")) / "run")
        teacher = load_teacher(run)
        teacher.source = Path(source)
        return teacher
    teacher = source if isinstance(source, Teacher) else load_teacher(source)
    if env is not None and env != teacher.config.env:
        raise CrlDistillError(f"env mismatch: the teacher was trained on {teacher.config.env!r}, "
                              f"not {env!r}")
    return teacher


def labelling_policy(t: Teacher, dcfg: DistillConfig) -> Callable:
    """The teacher as its labels act: the actor, or with `label="critic"` the best of
    `label_samples` fixed candidates under the critic (the noise set the labels use)."""
    if dcfg.label == "critic":
        return t.policy_fn(dcfg.label_samples, seed=dcfg.seed + 1)
    return t.policy_fn()


def default_out_dir(teacher: Teacher) -> Path:
    src = teacher.source
    if src.suffix == ".pkl":
        return src.parent / f"{src.stem}-students"
    return run_of(src) / "students"


def latency_us(fn: Callable, x: Any, n: int = 300) -> dict[str, float]:
    """Batch-1 latency of a jitted callable (median / p99 in microseconds, after warm-up)."""
    return percentiles_us(time_calls(lambda v: jax.block_until_ready(fn(v)), x, n, warmup=20))


def heldout_metrics(distiller: Distiller, teacher: Teacher, params: dict, seed: int) -> dict:
    """Action MSE and embedding cosine on teacher-visited states the student never trained on."""
    env = distiller.senv
    keys = jax.random.split(jax.random.PRNGKey(seed + 7919), 32)
    env_state = jax.vmap(env.reset)(keys)
    _, rows, _ = jax.jit(distiller.rollout, static_argnums=5, compiler_options=env.jit_options)(
        teacher.params, params, env_state, jax.random.PRNGKey(seed + 104729), jnp.float32(1.0),
        env.episode_length)
    m = distiller.modules
    mu, _ = m.policy.apply(params["policy"], rows["obs"])
    out = {"action_mse": float(jnp.mean(jnp.sum((jnp.tanh(mu) - jnp.tanh(rows["t_mean"])) ** 2,
                                                 -1)))}
    if distiller.scfg.encoders:
        s = env.state_size
        phi = m.phi.apply(params["phi"], jnp.concatenate([rows["obs"][:, :s], rows["action"]], -1))
        psi = m.psi.apply(params["psi"], rows["obs"][:, s:])

        def cos(a, b):
            return jnp.mean(jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1)
                                                  * jnp.linalg.norm(b, axis=-1) + 1e-8))

        out["embed_cosine_phi"] = float(cos(phi, rows["t_phi"]))
        out["embed_cosine_psi"] = float(cos(psi, rows["t_psi"]))
        out["embed_cosine"] = 0.5 * (out["embed_cosine_phi"] + out["embed_cosine_psi"])
    return out


PROGRESS_FORMAT = "crl-distill-distill-progress"


def train_student(teacher: Teacher, scfg: StudentConfig, dcfg: DistillConfig,
                  log: Callable[[dict], None] | None = None,
                  progress_path: Path | None = None) -> tuple[dict, list[dict], dict]:
    """Run the data/SGD loop for one student; returns its params, per-iteration logs and the
    per-element range of the inputs it was trained on ({"low": [..], "high": [..]}).

    With `progress_path`, the whole loop state (dataset, params, optimiser, envs, key) is
    checkpointed after every iteration and a rerun continues from it, so a kill loses at most
    one iteration.
    """
    dist = Distiller(teacher, scfg, dcfg)
    xla = teacher.env.jit_options
    init = jax.jit(dist.init, compiler_options=xla)
    collect = jax.jit(dist.collect, compiler_options=xla)
    train = jax.jit(dist.train, donate_argnums=0, compiler_options=xla)
    key = jax.random.PRNGKey(dcfg.seed)
    identity = {"student": dataclasses.asdict(scfg), "distill": dataclasses.asdict(dcfg),
                "teacher_source": str(teacher.source), "teacher_epoch": teacher.epoch}
    st, history, start = None, [], 0
    if progress_path is not None and progress_path.is_file():
        try:
            restored, meta = load_pytree(progress_path, jax.eval_shape(init, key), PROGRESS_FORMAT)
            if meta.get("identity") == identity:
                st, history, start = restored, meta["history"], int(meta["iteration"])
        except CrlDistillError:
            pass  # unreadable progress (e.g. killed mid-write of an older format): start over
    if st is None:
        st = init(key)
    for it in range(start, dcfg.iterations):
        beta = dcfg.beta(it)
        st, teacher_frac = collect(teacher.params, st, jnp.float32(beta))
        st, m = train(st)
        row = {"iteration": it, "beta": beta, "teacher_acted": float(teacher_frac),
               "dataset_size": int(st.dataset.size),
               **{k: float(v) for k, v in jax.device_get(m).items()}}
        if not np.isfinite(row["loss/total"]):
            raise CrlDistillError(f"student {scfg.name}: non-finite loss at DAgger iteration {it}")
        history.append(row)
        if progress_path is not None:
            save_pytree(progress_path, st, {"format": PROGRESS_FORMAT, "iteration": it + 1,
                                            "history": history, "identity": identity})
        if log:
            log(row)
    obs = np.asarray(st.dataset.obs[: int(st.dataset.size)])
    obs_range = {"low": obs.min(0).tolist(), "high": obs.max(0).tolist()}
    return jax.device_get(st.params), history, obs_range


@releases_locks
def distill(
    teacher: str | Path | Teacher,
    students: str | list[StudentConfig] = "2x64,2x256",
    out: str | Path | None = None,
    config: DistillConfig | None = None,
    env: str | None = None,
    encoders: bool = False,
    layer_norm: bool = False,
    progress: bool = True,
    obs: ObsSpec | None = None,
    logger: str = DEFAULT_LOGGER,
    logger_options: dict[str, Any] | None = None,
    time_jax: bool = True,
    teacher_eval: dict[str, float] | None = None,
) -> DistillResult:
    """Distill `teacher` into each student; evaluate all on the same seeds; write the report.

    `obs` sets what students given as a string observe (default: the teacher's observation).
    `logger` mirrors each student's per-iteration losses and its final evaluation, tagged
    `<student>/...`, x = DAgger iteration (`crl_distill.loggers`). `time_jax=False` leaves out
    the JAX batch-1 latency (`latency_batch1`: None), for callers that measure it themselves.
    The teacher is evaluated acting as it labels (with `label="critic"`, the best of
    `label_samples` under its critic), and retention is measured against that;
    `teacher_eval` passes in that evaluation when the caller already made it (same seeds).
    Everything is validated (teacher file, env, specs) before anything is written.
    """
    check_logger(logger)
    dcfg = config or DistillConfig()
    obs = obs or ObsSpec()
    specs = (parse_students(students, encoders=encoders, layer_norm=layer_norm,
                            state_indices=obs.state_indices, history=obs.history)
             if isinstance(students, str) else list(students))
    if not specs:
        raise CrlDistillError("no students given")
    t = resolve_teacher(teacher, env)
    # Student encoders regress onto the teacher's embeddings, so they share its size.
    specs = [dataclasses.replace(s, repr_dim=t.config.repr_dim) for s in specs]
    for s in specs:
        s.obs_spec.check(t.env.state_size, f"{t.config.env}'s state")
    out_dir = Path(out) if out is not None else default_out_dir(t)
    student_set.lock(out_dir)
    tenv = t.env
    console = _console(progress)

    labelling = labelling_policy(t, dcfg)
    teacher_eval = teacher_eval or evaluate(tenv, labelling, dcfg.eval_episodes, dcfg.seed)
    tcounts = t.param_counts
    teacher_row = {
        "name": f"teacher d{t.config.actor.depth}" + (
            f" best-of-{dcfg.label_samples}" if dcfg.label == "critic" else ""),
        "actor_params": tcounts["actor"],
        "params": sum(tcounts.values()),
        "flops_per_action": 2 * tcounts["actor"],
        **{f"eval/{k}": v for k, v in teacher_eval.items()},
        "latency_batch1": latency_us(jax.jit(labelling), jnp.zeros(
            (1, tenv.observation_size))) if time_jax else None,
    }
    console(f"teacher: success_any {teacher_eval['success_any']:.3f} on {dcfg.eval_episodes} "
            f"episodes (seed {dcfg.seed})")

    info_common = {
        "env": t.config.env, "teacher_source": str(t.source),
        "teacher_epoch": t.epoch, "teacher": t.config.to_dict(), "distill": dataclasses.asdict(dcfg),
    }
    student_set.prepare(out_dir, {
        "distill": dataclasses.asdict(dcfg), "students": [dataclasses.asdict(s) for s in specs],
        "teacher_source": str(t.source), "env": t.config.env, "crl_distill": __version__})
    live = make_logger(logger, out_dir, {"distill": dataclasses.asdict(dcfg),
                                          "students": [s.name for s in specs],
                                          "teacher_source": str(t.source)}, **(logger_options or {}))
    live.log({f"teacher/eval/{k}": v for k, v in teacher_eval.items()}, step=0)
    rows, paths = [], {}
    with contextlib.closing(live):
        for scfg in specs:
            rows.append(_distill_one(t, scfg, dcfg, out_dir, info_common, teacher_eval, tcounts,
                                     console, live, paths, time_jax))
    return _finish(t, dcfg, out_dir, rows, teacher_row, tenv, paths, progress)


def _distill_one(t: Teacher, scfg: StudentConfig, dcfg: DistillConfig, out_dir: Path,
                 info_common: dict, teacher_eval: dict, tcounts: dict, console: Callable,
                 live: Any, paths: dict, time_jax: bool) -> dict:
    """Train (or reuse), evaluate and save one student; returns its report row."""
    tenv = t.env
    final = student_set.student_file(out_dir, scfg.name)
    done = _finished_student(final, scfg, dcfg, t)
    if done is not None:
        console(f"student {scfg.name}: already trained with these settings, reusing {final}")
        params, history, obs_range = done
    else:
        console(f"student {scfg.name}: {dcfg.mode}, {dcfg.iterations} iterations")
        params, history, obs_range = train_student(
            t, scfg, dcfg, progress_path=student_set.progress_file(out_dir, scfg.name),
            log=lambda r, n=scfg.name: _log_iteration(console, live, n, r))
    dist = Distiller(t, scfg, dcfg)
    senv = dist.senv
    policy = _student_policy(scfg, senv, params)
    ev = evaluate(senv, policy, dcfg.eval_episodes, dcfg.seed)
    actor_params = count_params(params["policy"])
    row = {
        "name": scfg.name,
        "student": dataclasses.asdict(scfg),
        "actor_params": actor_params,
        "params": count_params(params),
        "param_fraction_of_teacher_actor": actor_params / tcounts["actor"],
        "observation": senv.layout if senv is not tenv else "teacher's",
        "flops_per_action": policy_flops(scfg, senv.observation_size, senv.action_size),
        **{f"eval/{k}": v for k, v in ev.items()},
        "retention": _ratio(ev["success_any"], teacher_eval["success_any"]),
        "retention_time_at_goal": _ratio(ev["time_at_goal"], teacher_eval["time_at_goal"]),
        **heldout_metrics(dist, t, params, dcfg.seed),
        "latency_batch1": latency_us(jax.jit(policy), jnp.zeros(
            (1, senv.observation_size))) if time_jax else None,
        # lets a later stage tell whether a file holds exactly this student without loading it
        "params_sha256": params_sha256(params),
        "history": history,
    }
    path = save_student(final, scfg, params,
                        {**info_common, "env_facts": senv.describe(), "history": history,
                         "obs_range": obs_range,
                         "summary": {k: v for k, v in row.items() if k != "history"}})
    student_set.finish_student(out_dir, scfg.name)
    paths[scfg.name] = path
    live.log({f"{scfg.name}/{k}": row[k] for k in ("eval/success_any", "eval/time_at_goal",
                                                   "retention", "retention_time_at_goal")},
             step=dcfg.iterations)
    return row


def _log_iteration(console: Callable, live: Any, name: str, r: dict) -> None:
    console(f"  {name} it {r['iteration']}: beta {r['beta']:.2f} teacher-acted "
            f"{r['teacher_acted']:.2f} data {r['dataset_size']:,} action loss {r['loss/action']:.4f}")
    live.log({f"{name}/{k}": v for k, v in r.items() if k != "iteration"}, step=r["iteration"])


def _finish(t: Teacher, dcfg: DistillConfig, out_dir: Path, rows: list[dict], teacher_row: dict,
            tenv: Any, paths: dict, progress: bool) -> DistillResult:
    """Write the report and the retention plot."""
    report = {"env": t.config.env, "mode": dcfg.mode, "teacher": teacher_row, "students": rows,
              "teacher_source": str(t.source), "seed": dcfg.seed,
              "eval_episodes": dcfg.eval_episodes,
              "teacher_param_counts_closed_form": {
                  "actor": param_count(t.config.actor, tenv.observation_size,
                                       2 * tenv.action_size)}}
    student_set.write_report(out_dir, report)
    plot_retention(report, student_set.plot_file(out_dir))
    if progress:
        print_table(report)
    return DistillResult(out_dir=out_dir, report=report, student_paths=paths)


def _finished_student(path: Path, scfg: StudentConfig, dcfg: DistillConfig,
                      t: Teacher) -> tuple[dict, list[dict], dict | None] | None:
    """(params, history, obs_range) of a student file written by the same settings, else None."""
    if not path.is_file():
        return None
    try:
        s = load_student(path)
    except CrlDistillError:
        return None  # damaged: retrain and overwrite atomically
    same = (s.config == scfg and s.meta.get("distill") == dataclasses.asdict(dcfg)
            and s.meta.get("teacher_source") == str(t.source)
            and s.meta.get("teacher_epoch") == t.epoch)
    return ((jax.device_get(s.params), s.meta.get("history", []), s.meta.get("obs_range"))
            if same else None)


def _student_policy(scfg: StudentConfig, env: Any, params: dict):
    from crl_distill.student.model import make_student

    return deterministic_policy(make_student(scfg, env.action_size).policy, params["policy"])


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _console(enabled: bool) -> Callable[[str], None]:
    if not enabled:
        return lambda _msg: None
    from rich.console import Console

    c = Console()
    return lambda msg: c.print(msg, highlight=False)


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = report["teacher"]
    table = Table(title=f"distillation on {report['env']} ({report['mode']}, "
                        f"{report['eval_episodes']} episodes, same seeds)")
    for col in ("model", "actor params", "FLOPs/action", "success_any", "retention",
                "time at goal", "action MSE", "embed cos", "JAX p50 us"):
        table.add_column(col, justify="right")
    table.add_row(t["name"], f"{t['actor_params']:,}", f"{t['flops_per_action']:,}",
                  f"{t['eval/success_any']:.3f}", "1.00", f"{t['eval/time_at_goal']:.1f}",
                  "-", "-", _p50(t))
    for r in report["students"]:
        table.add_row(r["name"], f"{r['actor_params']:,}", f"{r['flops_per_action']:,}",
                      f"{r['eval/success_any']:.3f}", f"{r['retention']:.2f}",
                      f"{r['eval/time_at_goal']:.1f}", f"{r['action_mse']:.4f}",
                      f"{r['embed_cosine']:.3f}" if "embed_cosine" in r else "-",
                      _p50(r))
    Console().print(table)


def _p50(row: dict) -> str:
    lat = row.get("latency_batch1")
    return f"{lat['p50_us']:.0f}" if lat else "-"


def plot_retention(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in report["students"] if np.isfinite(r["retention"])),
                  key=lambda r: r["actor_params"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if not rows:  # the teacher never reached the goal: retention is undefined
        ax.text(0.5, 0.5, "teacher success_any = 0: retention undefined", ha="center",
                transform=ax.transAxes)
    ax.plot([r["actor_params"] for r in rows], [r["retention"] for r in rows], marker="o")
    for r in rows:
        ax.annotate(r["name"], (r["actor_params"], r["retention"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.axhline(0.95, color="C3", lw=0.8, ls=":", label="95% target")
    ax.set(xscale="log" if rows else "linear", xlabel="student actor parameters",
           ylabel="retention (success_any)",
           title=f"{report['env']}: retention vs student size "
                 f"(teacher {report['teacher']['actor_params']:,} params)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
