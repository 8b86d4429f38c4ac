"""`distill(teacher, students=...)`: train students, evaluate them beside the teacher, report.

Each student goes through one `StudentRun`: reuse a finished file written with the same
settings, else train (resuming an interrupted loop), evaluate on the teacher's seeds, save.
The files it writes, a student set, belong to `crl_distill.distill.student_set`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from rich.console import Console
from rich.table import Table

from crl_distill import __version__
from crl_distill.checkpoint import load_pytree, params_sha256, save_pytree
from crl_distill.dirlock import releases_locks
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import Policy, evaluate, first_step
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
from .dagger import DistillConfig, Distiller, DistillState, action_mse, student_outputs

PROGRESS_FORMAT = "crl-distill-distill-progress"


@dataclasses.dataclass
class DistillResult:
    out_dir: Path
    report: dict
    student_paths: dict[str, Path]


def default_out_dir(teacher: Teacher) -> Path:
    src = teacher.source
    if src.suffix == ".pkl":
        return src.parent / f"{src.stem}-students"
    return run_of(src) / "students"


def latency_us(fn: Callable, x: Any, n: int = 300) -> dict[str, float]:
    """Batch-1 latency of a jitted callable (median / p99 in microseconds, after warm-up)."""
    return percentiles_us(time_calls(lambda v: jax.block_until_ready(fn(v)), x, n, warmup=20))


def settings_identity(scfg: StudentConfig, dcfg: DistillConfig, teacher: Teacher) -> dict:
    """What makes two distillations the same: the student, the distill settings (the teacher's
    acting among them) and the teacher file and epoch. A finished student file and an
    interrupted loop are reused only under equal identities. JSON-normal (tuples as lists), so
    it compares equal to what a file header read back holds."""
    distill, student = dataclasses.asdict(dcfg), dataclasses.asdict(scfg)
    # files from before a field existed stay reusable where it does not apply
    if not distill["perturb"]:
        del distill["perturb"]
    if not scfg.recurrent:
        del distill["bptt"], student["cell"]
    return json.loads(json.dumps({
        "student": student, "distill": distill,
        "teacher_source": str(teacher.source), "teacher_epoch": teacher.epoch}))


def _identity_of(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("student", "distill", "teacher_source", "teacher_epoch")}


class StudentRun:
    """One student through its distillation: the (teacher, student) `Distiller`, its files in
    the student set and its result (params, per-iteration history, observed input range)."""

    def __init__(self, teacher: Teacher, scfg: StudentConfig, dcfg: DistillConfig, out_dir: Path):
        self.teacher, self.scfg, self.dcfg = teacher, scfg, dcfg
        self.distiller = Distiller(teacher, scfg, dcfg)
        self.env = self.distiller.senv
        self.identity = settings_identity(scfg, dcfg, teacher)
        self.out_dir = out_dir
        self.path = student_set.student_file(out_dir, scfg.name)
        self.progress_path = student_set.progress_file(out_dir, scfg.name)
        self.params: dict | None = None
        self.history: list[dict] = []
        self.obs_range: dict | None = None

    def reuse(self) -> bool:
        """Take a finished student file written with the same settings, if there is one."""
        if not self.path.is_file():
            return False
        try:
            s = load_student(self.path)
        except CrlDistillError:
            return False  # damaged: retrain and overwrite atomically
        if _identity_of(s.meta) != self.identity:
            return False
        self.params = jax.device_get(s.params)
        self.history, self.obs_range = s.meta.get("history", []), s.meta.get("obs_range")
        return True

    def train(self, log: Callable[[dict], None] | None = None, checkpoint: bool = True) -> None:
        """The data/SGD loop. With `checkpoint`, the whole loop state (dataset, params,
        optimiser, envs, key) is saved after every iteration and a rerun continues from it, so
        a kill loses at most one iteration."""
        dist, dcfg = self.distiller, self.dcfg
        xla = self.teacher.env.jit_options
        init = jax.jit(dist.init, compiler_options=xla)
        collect = jax.jit(dist.collect, compiler_options=xla)
        train = jax.jit(dist.train, donate_argnums=0, compiler_options=xla)
        key = jax.random.PRNGKey(dcfg.seed)
        st, start = (self._resume(jax.eval_shape(init, key)) if checkpoint else None), 0
        if st is None:
            st, self.history = init(key), []
        else:
            start = len(self.history)
        for it in range(start, dcfg.iterations):
            beta = dcfg.beta(it)
            st, teacher_frac = collect(self.teacher.params, st, jnp.float32(beta))
            st, m = train(st)
            row = {"iteration": it, "beta": beta, "teacher_acted": float(teacher_frac),
                   "dataset_size": int(st.dataset.size),
                   **{k: float(v) for k, v in jax.device_get(m).items()}}
            if not np.isfinite(row["loss/total"]):
                raise CrlDistillError(f"student {self.scfg.name}: non-finite loss at DAgger "
                                      f"iteration {it}")
            self.history.append(row)
            if checkpoint:
                save_pytree(self.progress_path, st, {
                    "format": PROGRESS_FORMAT, "iteration": it + 1, "history": self.history,
                    "identity": self.identity})
            if log:
                log(row)
        obs = np.asarray(st.dataset.obs[: int(st.dataset.size)])
        self.obs_range = {"low": obs.min(0).tolist(), "high": obs.max(0).tolist()}
        self.params = jax.device_get(st.params)

    def _resume(self, template: DistillState) -> DistillState | None:
        if not self.progress_path.is_file():
            return None
        try:
            restored, meta = load_pytree(self.progress_path, template, PROGRESS_FORMAT)
        except CrlDistillError:
            return None  # unreadable progress (e.g. killed mid-write of an older format): start over
        if meta.get("identity") != self.identity:
            return None
        self.history = meta["history"]
        return restored

    def policy(self) -> Policy:
        if self.scfg.recurrent:
            return self.distiller.student_policy(self.params)
        return deterministic_policy(self.distiller.modules.policy, self.params["policy"])

    def heldout_metrics(self) -> dict:
        """Action MSE and embedding cosine on teacher-visited states the student never trained on."""
        dist, env, seed = self.distiller, self.env, self.dcfg.seed
        keys = jax.random.split(jax.random.PRNGKey(seed + 7919), 32)
        env_state = jax.vmap(env.reset)(keys)
        _, rows, _, _ = jax.jit(dist.rollout, static_argnums=5, compiler_options=env.jit_options)(
            self.teacher.params, self.params, env_state, jax.random.PRNGKey(seed + 104729),
            jnp.float32(1.0), env.episode_length)
        m = dist.modules
        if self.scfg.recurrent:  # rows are time-major: one sequence per env, from its start
            n = len(keys)
            rows = jax.tree_util.tree_map(
                lambda x: jnp.swapaxes(x.reshape(-1, n, *x.shape[1:]), 0, 1), rows)
        mu, _ = student_outputs(self.params, rows, self.scfg, env.action_size)
        if self.scfg.recurrent:
            rows = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), rows)
        out = {"action_mse": float(action_mse(mu, rows["t_mean"]))}
        if self.scfg.encoders:
            s = env.state_size
            phi = m.phi.apply(self.params["phi"],
                              jnp.concatenate([rows["obs"][:, :s], rows["action"]], -1))
            psi = m.psi.apply(self.params["psi"], rows["obs"][:, s:])

            def cos(a, b):
                return jnp.mean(jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1)
                                                      * jnp.linalg.norm(b, axis=-1) + 1e-8))

            out["embed_cosine_phi"] = float(cos(phi, rows["t_phi"]))
            out["embed_cosine_psi"] = float(cos(psi, rows["t_psi"]))
            out["embed_cosine"] = 0.5 * (out["embed_cosine_phi"] + out["embed_cosine_psi"])
        return out

    def report_row(self, teacher_eval: dict, time_jax: bool) -> dict:
        """Evaluate on the teacher's seeds and measure: the student's row of the report."""
        scfg, env, dcfg = self.scfg, self.env, self.dcfg
        policy = self.policy()
        ev = evaluate(env, policy, dcfg.eval_episodes, dcfg.seed)
        actor_params = count_params(self.params["policy"])
        return {
            "name": scfg.name,
            "student": dataclasses.asdict(scfg),
            "actor_params": actor_params,
            "params": count_params(self.params),
            "param_fraction_of_teacher_actor": actor_params / self.teacher.param_counts["actor"],
            "observation": env.layout if env is not self.teacher.env else "teacher's",
            "flops_per_action": policy_flops(scfg, env.observation_size, env.action_size),
            # the student is scored where it was distilled: under this perturbation (the
            # teacher's row: clean, so retention is against the clean teacher)
            "perturbation": dcfg.perturbation.to_dict(),
            **{f"eval/{k}": v for k, v in ev.items()},
            # the clean teacher on the same seeds, forward to the export's robustness gate
            "teacher_eval": {k: teacher_eval[k] for k in ("success_any", "time_at_goal", "episodes")},
            "retention": _ratio(ev["success_any"], teacher_eval["success_any"]),
            "retention_time_at_goal": _ratio(ev["time_at_goal"], teacher_eval["time_at_goal"]),
            **self.heldout_metrics(),
            "latency_batch1": latency_us(jax.jit(first_step(policy)), jnp.zeros(
                (1, env.observation_size))) if time_jax else None,
            # lets a later stage tell whether a file holds exactly this student without loading it
            "params_sha256": params_sha256(self.params),
            "history": self.history,
        }

    def save(self, row: dict) -> Path:
        t = self.teacher
        path = save_student(self.path, self.scfg, self.params, {
            **{k: v for k, v in self.identity.items() if k != "student"},
            "env": t.config.env, "teacher": t.config.to_dict(),
            "teacher_acting": self.dcfg.acting.to_dict(),
            "env_facts": self.env.describe(), "history": self.history,
            "obs_range": self.obs_range,
            "summary": {k: v for k, v in row.items() if k != "history"}})
        student_set.finish_student(self.out_dir, self.scfg.name)
        return path


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

    `teacher`: a loaded `Teacher`, or anything `load_teacher` reads (a run directory, a
    checkpoint, or a reference .pkl with `env`); `env`, when given, must be the teacher's.
    `obs` sets what students given as a string observe (default: the teacher's observation).
    `logger` mirrors each student's per-iteration losses and its final evaluation, tagged
    `<student>/...`, x = DAgger iteration (`crl_distill.loggers`). `time_jax=False` leaves out
    the JAX batch-1 latency (`latency_batch1`: None), for callers that measure it themselves.
    The teacher is evaluated acting as it labels (`config.acting`: with `label="critic"`, the
    best of `label_samples` under its critic), and retention is measured against that;
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
    t = teacher if isinstance(teacher, Teacher) else load_teacher(teacher, env)
    if env is not None and env != t.config.env:
        raise CrlDistillError(f"env mismatch: the teacher was trained on {t.config.env!r}, "
                              f"not {env!r}")
    # Student encoders regress onto the teacher's embeddings, so they share its size.
    specs = [dataclasses.replace(s, repr_dim=t.config.repr_dim) for s in specs]
    for s in specs:
        s.obs_spec.check(t.env.state_size, f"{t.config.env}'s state")
    out_dir = Path(out) if out is not None else default_out_dir(t)
    student_set.lock(out_dir)
    console = _console(progress)

    labelling = t.policy(dcfg.acting)
    teacher_eval = teacher_eval or evaluate(t.env, labelling, dcfg.eval_episodes, dcfg.seed)
    tcounts = t.param_counts
    teacher_row = {
        "name": f"teacher d{t.config.actor.depth}" + (
            f" best-of-{dcfg.label_samples}" if dcfg.acting.uses_critic else ""),
        "acting": dcfg.acting.to_dict(),
        "actor_params": tcounts["actor"],
        "params": sum(tcounts.values()),
        "flops_per_action": 2 * tcounts["actor"],
        **{f"eval/{k}": v for k, v in teacher_eval.items()},
        "latency_batch1": latency_us(jax.jit(labelling), jnp.zeros(
            (1, t.env.observation_size))) if time_jax else None,
    }
    console(f"teacher ({dcfg.acting.name}): success_any {teacher_eval['success_any']:.3f} on "
            f"{dcfg.eval_episodes} episodes (seed {dcfg.seed})")

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
            run = StudentRun(t, scfg, dcfg, out_dir)
            if run.reuse():
                console(f"student {scfg.name}: already trained with these settings, reusing "
                        f"{run.path}")
            else:
                console(f"student {scfg.name}: {dcfg.mode}, {dcfg.iterations} iterations")
                run.train(log=lambda r, n=scfg.name: _log_iteration(console, live, n, r))
            row = run.report_row(teacher_eval, time_jax)
            paths[scfg.name] = run.save(row)
            live.log({f"{scfg.name}/{k}": row[k] for k in ("eval/success_any", "eval/time_at_goal",
                                                           "retention", "retention_time_at_goal")},
                     step=dcfg.iterations)
            rows.append(row)
    report = {"env": t.config.env, "mode": dcfg.mode, "teacher": teacher_row, "students": rows,
              "teacher_source": str(t.source), "seed": dcfg.seed,
              "eval_episodes": dcfg.eval_episodes,
              "teacher_param_counts_closed_form": {
                  "actor": param_count(t.config.actor, t.env.observation_size,
                                       2 * t.env.action_size)}}
    student_set.write_report(out_dir, report)
    plot_retention(report, student_set.plot_file(out_dir))
    if progress:
        print_table(report)
    return DistillResult(out_dir=out_dir, report=report, student_paths=paths)


def _log_iteration(console: Callable, live: Any, name: str, r: dict) -> None:
    console(f"  {name} it {r['iteration']}: beta {r['beta']:.2f} teacher-acted "
            f"{r['teacher_acted']:.2f} data {r['dataset_size']:,} action loss {r['loss/action']:.4f}")
    live.log({f"{name}/{k}": v for k, v in r.items() if k != "iteration"}, step=r["iteration"])


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _console(enabled: bool) -> Callable[[str], None]:
    if not enabled:
        return lambda _msg: None
    c = Console()
    return lambda msg: c.print(msg, highlight=False)


def print_table(report: dict) -> None:
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


def draw_retention(ax: Any, students: list[dict]) -> list[dict]:
    """Retention (success_any, student / teacher) against actor parameters on `ax`, with the
    95% pick line; returns the rows drawn. A NaN retention (the teacher never reached the goal)
    is not drawn."""
    rows = sorted((r for r in students if np.isfinite(r["retention"])),
                  key=lambda r: r["actor_params"])
    ax.plot([r["actor_params"] for r in rows], [r["retention"] for r in rows], marker="o")
    for r in rows:
        ax.annotate(r["name"], (r["actor_params"], r["retention"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.axhline(student_set.RETAIN, color="C3", lw=0.8, ls=":",
               label=f"{student_set.RETAIN:.0%} target")
    ax.set(xscale="log" if rows else "linear", xlabel="student actor parameters",
           ylabel="retention (success_any)")
    return rows


def plot_retention(report: dict, path: Path) -> Path:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend that needs no display

    fig, ax = plt.subplots(figsize=(6, 3.8))
    if not draw_retention(ax, report["students"]):
        ax.text(0.5, 0.5, "teacher success_any = 0: retention undefined", ha="center",
                transform=ax.transAxes)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set(title=f"{report['env']}: retention vs student size "
                 f"(teacher {report['teacher']['actor_params']:,} params)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
