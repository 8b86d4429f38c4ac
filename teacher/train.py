"""Running a teacher: epochs, evaluation, checkpoints, resume, and the loader.

The run directory's layout, writer and reader live in `crl_distill.teacher.run_dir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crl_distill.checkpoint import load_pytree, read_meta
from crl_distill.dirlock import releases_locks
from crl_distill.envs import GoalEnv, make
from crl_distill.envs.perturbed import perturbed
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import BatchPolicy
from crl_distill.fileio import atomic_write
from crl_distill.loggers import DEFAULT_LOGGER, check_logger, make_logger
from crl_distill.perturb import parse_perturbation
from crl_distill.teacher.acting import ACTOR, Acting
from crl_distill.teacher.config import TeacherConfig
from crl_distill.teacher.crl import CRL, Carry, carry_shardings, make_mesh
from crl_distill.teacher.networks import param_count
from crl_distill.teacher.reference_import import import_reference
from crl_distill.teacher.run_dir import (
    CHECKPOINT_FORMAT,
    RunWriter,
    barrier,
    checkpoint_epoch,
    curve_path,
    epoch_checkpoints,
    find_teacher_checkpoint,
    holds_files,
    is_run_dir,
    load_latest,
    lock_run,
    package_versions,
    read_metrics,
    read_run_config,
    read_run_info,
    replay_due,
    seed_run,
    seed_runs,
    state_part,
)

__all__ = ["CHECKPOINT_FORMAT", "NonFiniteError", "Teacher", "TrainResult", "find_teacher_checkpoint",
           "load_teacher", "read_run_config", "train_seeds", "train_teacher"]


#: a key stream, apart from training's, for the envs and prefill of a resume without a buffer
REFILL_STREAM = 1 << 20


class NonFiniteError(CrlDistillError):
    """Training produced NaN/inf; the last good checkpoint is left untouched."""


def teacher_param_counts(cfg: TeacherConfig, env: GoalEnv) -> dict[str, int]:
    """Closed-form parameter counts of the actor, phi and psi."""
    return {
        "actor": param_count(cfg.actor, env.observation_size, 2 * env.action_size),
        "phi": param_count(cfg.critic, env.state_size + env.action_size, cfg.repr_dim),
        "psi": param_count(cfg.critic, env.goal_size, cfg.repr_dim),
    }


def _eval_rank(row: dict) -> tuple[float, float, float]:
    """How a checkpoint's evaluation ranks: success_any first, then time at goal (which tells
    apart policies that all reach the goal, such as a reacher that holds it from one that
    sweeps through it), then the final distance (which tells apart policies that never reach
    it, such as an ant still learning to walk)."""
    return (row["eval/success_any"], row["eval/time_at_goal"], -row["eval/final_dist"])


def _tree_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree)
               if jnp.issubdtype(x.dtype, jnp.floating))


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict]


@releases_locks
def train_teacher(
    cfg: TeacherConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    devices: list | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    logger: str = DEFAULT_LOGGER,
    logger_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train (or resume) a teacher into run directory `out`; returns its path and metrics.

    With `resume`, the config is read from `out/config.json` and training continues from the
    newest readable checkpoint; `cfg` is ignored. `logger` mirrors every metrics row live
    (`crl_distill.loggers`: tensorboard, wandb or none; `logger_options`: W&B project, name).
    """
    check_logger(logger)
    run_dir = Path(out)
    cfg = _open_run(run_dir, cfg, resume)
    return _train([cfg], [run_dir], resume, progress, devices, on_epoch, logger, logger_options,
                  stacked=False)[0]


@releases_locks
def train_seeds(
    cfg: TeacherConfig | None,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    logger: str = DEFAULT_LOGGER,
    logger_options: dict[str, Any] | None = None,
) -> list[TrainResult]:
    """Train one teacher per seed in one program: the whole training carry (parameters,
    optimiser states, buffer, env states, keys) vmapped over seeds inside one jitted epoch, as
    `jit(vmap(train))` does. Seed s writes the run directory `out/seed-s` (`run_dir.seed_run`),
    each an ordinary run that every command reads; `cfg.seed` is replaced by each seed.

    With `resume`, the seeds and settings are read back from `out`'s run directories; all
    continue from the newest epoch every one of them has. One device (multi-device and
    multi-process runs train one seed per command).
    """
    check_logger(logger)
    out = Path(out)
    if resume:
        runs = seed_runs(out)
        if not runs:
            raise CrlDistillError(f"{out}: no seed-N run directories to resume")
    else:
        if cfg is None or not seeds:
            raise CrlDistillError("give the seeds to train, e.g. --seeds 0,1,2")
        if len(set(seeds)) != len(seeds):
            raise CrlDistillError(f"seeds repeat: {list(seeds)}")
        runs = [seed_run(out, s) for s in seeds]
    cfgs = [_open_run(r, None if resume else dataclasses.replace(cfg, seed=s), resume)
            for r, s in zip(runs, [None] * len(runs) if resume else seeds, strict=True)]
    differ = {k for c in cfgs for k, v in c.to_dict().items() if k != "seed"
              and v != cfgs[0].to_dict()[k]}
    if differ:
        raise CrlDistillError(f"{out}: its seed runs differ in {sorted(differ)}; resume them one "
                              f"at a time")
    return _train(cfgs, runs, resume, progress, None, on_epoch, logger, logger_options,
                  stacked=True)


def _open_run(run_dir: Path, cfg: TeacherConfig | None, resume: bool) -> TeacherConfig:
    """Lock `run_dir` and check it can be trained into; the config to train with."""
    lock_run(run_dir)  # before the emptiness check: two runs cannot both find it empty
    if resume:
        if not is_run_dir(run_dir):
            raise CrlDistillError(f"{run_dir}: not a teacher run directory (no config.json)")
        cfg = read_run_config(run_dir)
    elif holds_files(run_dir):
        raise CrlDistillError(f"{run_dir} already exists and is not empty; use --resume {run_dir} "
                              f"to continue it or choose another --out")
    # Every process has looked before process 0 writes anything.
    barrier("crl-distill-run-checked")
    return cfg


def _stack(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)


def _row_of(tree: Any, i: int | None) -> Any:
    """Seed `i`'s slice of a seed-stacked tree (`i` None: the tree is one run's)."""
    return tree if i is None else jax.tree_util.tree_map(lambda x: x[i], tree)


def _train(cfgs: list[TeacherConfig], run_dirs: list[Path], resume: bool, progress: bool,
           devices: list | None, on_epoch: Callable[[dict], None] | None, logger: str,
           logger_options: dict[str, Any] | None, stacked: bool) -> list[TrainResult]:
    """The epoch loop for one run, or for several seeds of one config vmapped (`stacked`)."""
    cfg = cfgs[0]
    env = training_env(cfg)
    mesh = make_mesh(devices)
    if stacked and (mesh.size > 1 or jax.process_count() > 1):
        raise CrlDistillError(f"several seeds train in one program on one device; this run has "
                              f"{mesh.size} devices in {jax.process_count()} processes")
    if cfg.num_envs % mesh.size or cfg.batch_size % mesh.size:
        raise CrlDistillError(f"num_envs ({cfg.num_envs}) and batch_size ({cfg.batch_size}) must be "
                              f"divisible by the number of devices ({mesh.size})")
    main = jax.process_index() == 0
    crl = CRL(cfg, env, mesh)
    keys = [jax.random.PRNGKey(c.seed) for c in cfgs]
    template = jax.eval_shape(crl.init, keys[0])
    shardings = carry_shardings(template, mesh)
    xla = env.jit_options
    if stacked:
        vm = jax.vmap
        init = jax.jit(vm(crl.init), compiler_options=xla)
        epoch_fn = jax.jit(vm(crl.epoch), donate_argnums=0, compiler_options=xla)
        evaluate = jax.jit(vm(crl.evaluate), compiler_options=xla)
        key = jnp.stack(keys)
        slices: list[int | None] = list(range(len(cfgs)))
    else:
        init = jax.jit(crl.init, out_shardings=shardings, compiler_options=xla)
        epoch_fn = jax.jit(crl.epoch, donate_argnums=0, out_shardings=(shardings, None),
                           compiler_options=xla)
        evaluate = jax.jit(crl.evaluate, compiler_options=xla)
        key, slices = keys[0], [None]

    writers = [RunWriter(r, c) for r, c in zip(run_dirs, cfgs, strict=True)]
    start_epoch, rows = 0, [[] for _ in cfgs]
    has_ckpt = resume and all(epoch_checkpoints(r) for r in run_dirs)
    if has_ckpt:
        # Every seed continues from the newest epoch all of them have (a kill can fall between
        # two seeds' writes; each keeps its last two epochs).
        newest = min(checkpoint_epoch(epoch_checkpoints(r)[-1]) for r in run_dirs)
        restored = [load_latest(r, template, shardings, max_epoch=newest) for r in run_dirs]
        start_epoch = min(x[1] for x in restored)
        if any(x[1] != start_epoch for x in restored):
            restored = [load_latest(r, template, shardings, max_epoch=start_epoch)
                        for r in run_dirs]
        state = _stack([x[0] for x in restored]) if stacked else restored[0][0]
        if any(x[2] is None for x in restored):
            # No stored buffer: fresh envs and a random prefill, counted as env steps taken.
            refill = (jax.vmap(jax.random.fold_in, (0, None))(key, REFILL_STREAM + start_epoch)
                      if stacked else jax.random.fold_in(key, REFILL_STREAM + start_epoch))
            fresh = init(refill)
            ts = state.train.replace(env_steps=state.train.env_steps + fresh.train.env_steps)
            carry = fresh.replace(train=ts, key=state.key)
        else:
            data = _stack([x[2] for x in restored]) if stacked else restored[0][2]
            carry = state.replace(replay=data.replay, env_state=data.env_state,
                                  episode=data.episode)
        # rows past the checkpoint will be recomputed
        rows = [w.rewind(start_epoch) for w in writers]
    else:
        for w, c in zip(writers, cfgs, strict=True):
            w.start({
                "teacher": c.to_dict(),
                "env": env.describe(),
                "params": teacher_param_counts(c, env),
                "versions": package_versions(),
                "devices": [str(d) for d in mesh.devices.flat],
                "processes": jax.process_count(),
                **({"seeds": [x.seed for x in cfgs]} if stacked else {}),
            })
        carry = init(key)

    steps_now = jax.device_get(carry.train.env_steps)
    lives = [make_logger(logger if main else "none", r,
                         {"teacher": c.to_dict(), "env": env.describe()},
                         start_step=int(_row_of(steps_now, i)) if start_epoch else None,
                         **(logger_options or {}))
             for r, c, i in zip(run_dirs, cfgs, slices, strict=True)]
    eval_base = [jax.random.PRNGKey(c.seed + 1) for c in cfgs]
    with _Progress(progress and main, cfg, start_epoch, len(cfgs)) as bar, \
            contextlib.ExitStack() as stack:
        for live in lives:
            stack.enter_context(contextlib.closing(live))
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            carry, m = epoch_fn(carry)
            jax.block_until_ready(m)
            t_eval = time.perf_counter()
            eval_keys = [jax.random.fold_in(k, epoch) for k in eval_base]
            ev = evaluate(carry.train.actor, jnp.stack(eval_keys) if stacked else eval_keys[0])
            m, ev = jax.device_get((m, ev))
            seconds = time.perf_counter() - t0
            timing = {"epoch": epoch, "seconds": seconds, "sps": cfg.env_steps_per_epoch / seconds,
                      "eval_seconds": time.perf_counter() - t_eval,
                      **({"seeds": len(cfgs)} if stacked else {})}
            for i, c, run_dir, writer, run_rows, live in zip(slices, cfgs, run_dirs, writers, rows,
                                                              lives, strict=True):
                mi, evi = _row_of(m, i), _row_of(ev, i)
                ts = _row_of(carry.train, i)
                if not all(math.isfinite(float(v)) for v in mi.values()) or not _tree_finite(
                        (ts.actor, ts.critic, ts.log_alpha)):
                    raise NonFiniteError(
                        f"non-finite loss or parameters in epoch {epoch} (SGD steps up to "
                        f"{int(ts.sgd_steps)}); last good checkpoint kept in "
                        f"{run_dir / 'checkpoints'}")
                row = {
                    "epoch": epoch,
                    "env_steps": int(ts.env_steps),
                    "sgd_steps": int(ts.sgd_steps),
                    **{k: float(v) for k, v in mi.items()},
                    **{f"eval/{k}": float(v) for k, v in evi.items()},
                }
                with_replay = replay_due(c, epoch + 1, run_dir)
                # Only the parts to be written are sliced out of a seed-stacked carry.
                own = _row_of(carry if with_replay else state_part(carry), i)
                # Checkpoint first: a kill between the two writes loses only a metrics line,
                # which the resume rewrites from the checkpoint's epoch.
                if not run_rows or _eval_rank(row) > max(map(_eval_rank, run_rows)):
                    writer.save_best(own, epoch + 1)
                t_save = time.perf_counter()
                writer.save(own, shardings, epoch + 1, with_replay)
                own_timing = {**timing, "checkpoint_seconds": time.perf_counter() - t_save}
                writer.append(row, own_timing)
                live.log({**row, **{k: v for k, v in own_timing.items() if k != "epoch"}},
                         step=row["env_steps"])
                run_rows.append(row)
                if on_epoch is not None:
                    on_epoch({**row, **own_timing, "seed": c.seed})
            bar.update({**row, **timing})
    if main:
        for run_dir in run_dirs:
            plot_learning_curve(run_dir)
    return [TrainResult(run_dir=r, metrics=x) for r, x in zip(run_dirs, rows, strict=True)]


# ----------------------------------------------------------------------------------------------
# Loading a trained teacher as a ready-to-call policy
# ----------------------------------------------------------------------------------------------
@dataclass
class Teacher:
    """A trained teacher: `policy(acting)` is the teacher as it acts, `act(obs)` its actor,
    `embed(state, action, goal)` its critic's encoders.

    `params` = {"actor": ..., "critic": {"phi": ..., "psi": ...}}; `crl` holds the pure
    functions. `source` is the file it was loaded from (a reference .pkl for an import).
    """

    config: TeacherConfig
    env: GoalEnv
    params: dict
    crl: CRL
    source: Path
    epoch: int

    def __post_init__(self) -> None:
        self._act = jax.jit(lambda params, obs: self.crl.acting_policy(params)(obs))
        self._embed = jax.jit(self.crl.embed)

    def policy(self, acting: Acting = ACTOR, traceable: bool = False) -> BatchPolicy:
        """The teacher as it acts (`teacher.acting`): a jittable obs [B, O] -> action [B, A]
        closed over the parameters. `traceable=True` builds the same policy over the
        unrolled networks, for ONNX tracing."""
        return self.crl.acting_policy(self.params, acting, traceable)

    def act(self, obs: Any) -> jax.Array:
        """obs [B, obs_size] (or [obs_size]) -> deterministic action tanh(mean)."""
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.ndim == 1
        a = self._act({"actor": self.params["actor"]}, obs[None] if single else obs)
        return a[0] if single else a

    def embed(self, state: Any, action: Any, goal: Any) -> tuple[jax.Array, jax.Array]:
        """-> phi(s, a) [B, repr_dim], psi(g) [B, repr_dim]."""
        return self._embed(self.params["critic"], jnp.asarray(state), jnp.asarray(action),
                           jnp.asarray(goal))

    @property
    def param_counts(self) -> dict[str, int]:
        return teacher_param_counts(self.config, self.env)


def training_env(cfg: TeacherConfig) -> GoalEnv:
    """The env a teacher trains (and is scored per epoch) in: `cfg.env`, its physics under
    `cfg.perturb` (domain randomization), its observation the true state."""
    return perturbed(make(cfg.env), parse_perturbation(cfg.perturb), sensed=False)


def load_teacher(path: str | Path, env: str | None = None) -> Teacher:
    """A teacher from a run directory, a checkpoint written by `train_teacher`, or a reference
    scaling-crl / JaxGCRL `.pkl` (converted on the fly; it needs `env`, which the pickle does
    not record). `env`, when given, must be the teacher's."""
    path = Path(path)
    if path.suffix == ".pkl":
        return _load_reference(path, env)
    ckpt = find_teacher_checkpoint(path)
    meta = read_meta(ckpt, CHECKPOINT_FORMAT)
    try:
        cfg = TeacherConfig.from_dict(meta["teacher"])
    except (KeyError, TypeError) as e:
        raise CrlDistillError(f"{ckpt}: corrupt teacher config in header ({e})") from None
    if env is not None and env != cfg.env:
        raise CrlDistillError(f"env mismatch: the teacher was trained on {cfg.env!r}, not {env!r}")
    goal_env = make(cfg.env)
    crl = CRL(cfg, goal_env)
    restored, _ = load_pytree(ckpt, _carry_subset_template(crl), CHECKPOINT_FORMAT)
    params = {"actor": restored.train.actor, "critic": restored.train.critic}
    return Teacher(config=cfg, env=goal_env, params=jax.device_put(params), crl=crl, source=ckpt,
                   epoch=int(meta.get("epoch", 0)))


def _load_reference(path: Path, env: str | None) -> Teacher:
    if env is None:
        raise CrlDistillError(f"{path}: a reference .pkl needs --env (it does not record its "
                              f"environment)")
    run = import_reference(path, env, Path(tempfile.mkdtemp(prefix="crl-import-")) / "run")
    teacher = load_teacher(run)
    teacher.source = path
    return teacher


def _carry_subset_template(crl: CRL) -> Carry:
    """A Carry-shaped template holding only the actor and critic leaves (others None)."""
    ts = jax.eval_shape(crl.init_train_state, jax.random.PRNGKey(0))
    none_ts = jax.tree_util.tree_map(lambda _: None, ts)
    train = none_ts.replace(actor=ts.actor, critic=ts.critic)
    return Carry(train=train, replay=None, env_state=None, episode=None, key=None)


# ----------------------------------------------------------------------------------------------
# Console and plots
# ----------------------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar over env steps with SPS, loss and success; silent when disabled."""

    def __init__(self, enabled: bool, cfg: TeacherConfig, start_epoch: int, seeds: int = 1):
        self.enabled, self.cfg, self.start_epoch, self.seeds = enabled, cfg, start_epoch, seeds

    def __enter__(self):
        if self.enabled:
            self.p = Progress(TextColumn("[bold]teacher[/] {task.fields[env]}"), BarColumn(),
                              MofNCompleteColumn(), TextColumn("env steps"), TimeElapsedColumn(),
                              TextColumn("{task.fields[info]}"), transient=False)
            total = self.cfg.epochs * self.cfg.env_steps_per_epoch
            self.p.start()
            env = self.cfg.env + (f" ({self.seeds} seeds)" if self.seeds > 1 else "")
            self.task = self.p.add_task("train", total=total, env=env,
                                        completed=self.start_epoch * self.cfg.env_steps_per_epoch,
                                        info="compiling...")
        return self

    def update(self, row: dict) -> None:
        if self.enabled:
            info = (f"SPS {row['sps']:,.0f}  loss {row['critic_loss']:.3f}  "
                    f"success {row['eval/success_any']:.2f}  at-goal {row['eval/time_at_goal']:.1f}")
            self.p.update(self.task, advance=self.cfg.env_steps_per_epoch, info=info)

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()


def plot_learning_curve(run_dir: str | Path) -> Path | None:
    """learning_curve.png: success and time at goal vs env steps, and the critic loss."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["env_steps"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [r["eval/success_any"] for r in rows], marker="o")
    axes[0].set(title="success_any (deterministic actor)", xlabel="env steps", ylim=(-0.02, 1.02))
    axes[1].plot(steps, [r["eval/time_at_goal"] for r in rows], marker="o", color="C2")
    axes[1].set(title="time at goal (steps / episode)", xlabel="env steps")
    axes[2].plot(steps, [r["critic_loss"] for r in rows], marker="o", color="C3")
    axes[2].set(title="critic loss", xlabel="env steps")
    cfg = read_run_info(run_dir)["teacher"]
    fig.suptitle(f"{cfg['env']}: actor depth {cfg['actor']['depth']}, critic depth "
                 f"{cfg['critic']['depth']}, width {cfg['critic']['width']}")
    fig.tight_layout()
    out = curve_path(run_dir)
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return out
