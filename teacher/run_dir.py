"""A teacher run directory: its layout, writer, loader and completeness check.

This is the one module that knows the file names inside a teacher run:

    run_dir/config.json        every setting, env facts, package versions
    run_dir/metrics.jsonl      one line per epoch (deterministic: same seed, same bytes on CPU)
    run_dir/timing.jsonl       wall-clock seconds and SPS per epoch
    run_dir/learning_curve.png at the end
    run_dir/checkpoints/
        epoch-NNNNNN.npz       parameters, optimiser states, counters and the RNG key after
                               epoch NNNNNN (every epoch; last two kept)
        replay-NNNNNN-pIofN.npz  process I of N's share of the replay buffer, env states and
                               episode counters (every `replay_checkpoint_every` epochs; last
                               two kept per process)
        best.npz               parameters of the best evaluated epoch (`--from .../best.npz`)
    run_dir/save-replay        touch it to have the next epoch save the replay (removed then)

Seeds trained together (`crl-distill teacher --seeds 0,1,2 --out G`) are one ordinary run
directory each, `G/seed-0`, `G/seed-1`, ... (`seed_run`, `seed_runs`).
    run_dir/.teacher.lock      held by the process training into it (`lock_run`; removed at its end,
                               a killed holder's file is locked again by the next run)

With several processes (`jax.distributed`) the directory must be on a filesystem every host
sees: process 0 writes config, metrics and the epoch/best files (their leaves are replicated),
every process writes its own replay share. An epoch file is written only after every process
has written its replay share (a barrier), so a readable epoch file never points at a replay
that is still being written.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jax
import numpy as np

from crl_distill import __version__, dirlock
from crl_distill.checkpoint import load_pytree, save_pytree
from crl_distill.errors import CrlDistillError
from crl_distill.fileio import append_jsonl, atomic_write, atomic_write_json, read_jsonl
from crl_distill.teacher.config import TeacherConfig
from crl_distill.teacher.crl import Carry

CHECKPOINT_FORMAT = "crl-distill-teacher"
REPLAY_FORMAT = "crl-distill-teacher-replay"
KEEP_CHECKPOINTS = 2
CONFIG, METRICS, TIMING, CURVE = "config.json", "metrics.jsonl", "timing.jsonl", "learning_curve.png"
BEST = "best.npz"
SEED_PREFIX = "seed-"
CHECKPOINTS = "checkpoints"
REPLAY_REQUEST = "save-replay"
LOCK = ".teacher.lock"
_REPLAY_RE = re.compile(r"replay-(\d{6})-p(\d+)of(\d+)\.npz")


def package_versions() -> dict[str, str]:
    out = {"crl-distill": __version__}
    for pkg in ("jax", "jaxlib", "flax", "optax", "brax", "mujoco", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def curve_path(run_dir: Path) -> Path:
    return Path(run_dir) / CURVE


def is_run_dir(run_dir: Path) -> bool:
    return (Path(run_dir) / CONFIG).is_file()


def run_of(path: Path) -> Path:
    """The run directory a checkpoint file belongs to; any other file's directory; a
    directory itself."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == CHECKPOINTS else path.parent


def holds_files(run_dir: Path) -> bool:
    """Whether `run_dir` exists and holds anything but its lock file (a fresh run needs it empty)."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())


def lock_run(run_dir: Path) -> None:
    """Hold `run_dir`'s lock until the calling `@dirlock.releases_locks` function ends; one line
    naming the holder's pid when another process trains into it.

    In a multi-process run only process 0 takes it (the others would be refused by their own
    run's lock) and every process learns the outcome, so all of them stop together; a
    collective: every process must call it.
    """
    path = Path(run_dir) / LOCK
    refused = None
    if jax.process_index() == 0:
        try:
            dirlock.hold(path, "teacher run")
        except CrlDistillError as e:
            refused = e
    if not _all_processes(refused is None):
        raise refused or CrlDistillError(dirlock.refusal(path, "teacher run"))


def write_imported(run_dir: Path, info: dict[str, Any], state: Carry, cfg: TeacherConfig,
                   **meta: Any) -> Path:
    """A run directory holding converted parameters only (`reference_import`): config.json
    with `info` and one epoch-0 checkpoint of `state`, whose header also records `meta`."""
    run_dir = Path(run_dir)
    if holds_files(run_dir):
        raise CrlDistillError(f"{run_dir} already exists and is not empty")
    atomic_write_json(run_dir / CONFIG, info)
    save_pytree(checkpoint_dir(run_dir) / "epoch-000000.npz", state,
                {**_meta(cfg, 0), **meta})
    return run_dir


def epoch_checkpoints(run_dir: Path, max_epoch: int | None = None) -> list[Path]:
    """Parameter checkpoints, oldest first (those after `max_epoch` left out, if given)."""
    paths = sorted(checkpoint_dir(run_dir).glob("epoch-*.npz"))
    return [p for p in paths if max_epoch is None or checkpoint_epoch(p) <= max_epoch]


def checkpoint_epoch(path: Path) -> int:
    """The epoch count in an `epoch-NNNNNN.npz` name."""
    return int(Path(path).stem.removeprefix("epoch-"))


def seed_run(group: Path, seed: int) -> Path:
    """Seed `seed`'s run directory in a group trained together (`train.train_seeds`)."""
    return Path(group) / f"{SEED_PREFIX}{seed}"


def seed_runs(group: Path) -> list[Path]:
    """The run directories of a seed group, by seed; [] for anything else."""
    group = Path(group)
    if not group.is_dir():
        return []
    runs = [p for p in group.iterdir() if p.is_dir() and re.fullmatch(rf"{SEED_PREFIX}\d+", p.name)
            and is_run_dir(p)]
    return sorted(runs, key=lambda p: int(p.name.removeprefix(SEED_PREFIX)))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The whole config.json (teacher settings, env facts, parameter counts, versions)."""
    path = Path(run_dir) / CONFIG
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CrlDistillError(f"{path}: corrupt teacher config ({e})") from None


def read_run_config(run_dir: Path) -> TeacherConfig:
    """The TeacherConfig a run directory's config.json records; one line when it is corrupt."""
    path = Path(run_dir) / CONFIG
    try:
        return TeacherConfig.from_dict(read_run_info(run_dir)["teacher"])
    except (KeyError, TypeError) as e:
        raise CrlDistillError(f"{path}: corrupt teacher config ({e})") from None


def read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / METRICS)


def find_teacher_checkpoint(path: str | Path) -> Path:
    """A run directory's newest checkpoint, or the file itself."""
    p = Path(path)
    if p.is_dir():
        ckpts = epoch_checkpoints(p)
        if not ckpts:
            raise CrlDistillError(f"{p}: not a teacher run directory (no checkpoints/epoch-*.npz)")
        return ckpts[-1]
    if not p.exists():
        raise CrlDistillError(f"{p}: no such file or directory")
    return p


def run_complete(run_dir: Path, want: TeacherConfig) -> bool:
    """The run finished with exactly the requested config; one clear error if it holds another.

    The replay schedule does not change what is trained, so it is not compared.
    """
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        return False
    have = read_run_config(run_dir)
    a, b = have.to_dict(), want.to_dict()
    diff = ", ".join(f"{k}={a[k]!r} (requested {b[k]!r})" for k in a
                     if a[k] != b.get(k) and k != "replay_checkpoint_every")
    if diff:
        raise CrlDistillError(f"{run_dir} holds a teacher trained with other settings: {diff}; "
                              f"choose another --out or remove it")
    if not epoch_checkpoints(run_dir):
        return False
    return len(read_metrics(run_dir)) >= want.epochs and curve_path(run_dir).exists()


def _meta(cfg: TeacherConfig, epoch: int, fmt: str = CHECKPOINT_FORMAT) -> dict[str, Any]:
    return {"format": fmt, "version": 2, "epoch": epoch, "env": cfg.env,
            "teacher": cfg.to_dict(), "crl_distill": __version__}


def state_part(carry: Carry) -> Carry:
    return carry.replace(replay=None, env_state=None, episode=None)


def _data_part(carry: Carry) -> Carry:
    return carry.replace(train=None, key=None)


def _replay_name(epoch: int, process: int, processes: int) -> str:
    return f"replay-{epoch:06d}-p{process}of{processes}.npz"


def _replay_epochs(run_dir: Path, process: int | None = None) -> list[int]:
    """Epochs with a replay share on disk (of any process, or of `process`), newest first."""
    found = set()
    for p in checkpoint_dir(run_dir).glob("replay-*.npz"):
        m = _REPLAY_RE.fullmatch(p.name)
        if m and (process is None or (int(m[2]) == process and int(m[3]) == jax.process_count())):
            found.add(int(m[1]))
    return sorted(found, reverse=True)


def barrier(name: str) -> None:
    """Wait for every process of a multi-process run (a no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _all_processes(flag: bool) -> bool:
    """True when `flag` holds on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def _specs(shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda s: s.spec, shardings)


def _to_host_local(tree: Any, shardings: Any) -> Any:
    """This process's share of globally sharded arrays (the whole array when replicated)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    mesh = jax.tree_util.tree_leaves(shardings)[0].mesh
    return multihost_utils.global_array_to_host_local_array(tree, mesh, _specs(shardings))


def _to_global(tree: Any, shardings: Any) -> Any:
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    from jax.experimental import multihost_utils

    mesh = jax.tree_util.tree_leaves(shardings)[0].mesh
    return multihost_utils.host_local_array_to_global_array(tree, mesh, _specs(shardings))


def _local_template(template: Any, shardings: Any) -> Any:
    """Shapes of this process's share: sharded axes shrink by the process count."""
    share = jax.local_device_count() / jax.device_count()

    def local(t, s):
        axes = tuple(s.spec) + (None,) * (len(t.shape) - len(s.spec))
        shape = [d if ax is None else int(d * share) for d, ax in zip(t.shape, axes, strict=True)]
        return jax.ShapeDtypeStruct(tuple(shape), t.dtype)

    return jax.tree_util.tree_map(local, template, shardings)


def replay_due(cfg: TeacherConfig, epochs_done: int, run_dir: Path) -> bool:
    """Whether the checkpoint after `epochs_done` epochs holds the replay: every
    `replay_checkpoint_every` epochs, after the last one, or when asked for by touching
    run_dir/save-replay. A collective in a multi-process run (every process must call it)."""
    every = cfg.replay_checkpoint_every
    scheduled = every > 0 and (epochs_done % every == 0 or epochs_done == cfg.epochs)
    return scheduled or not _all_processes(not (Path(run_dir) / REPLAY_REQUEST).exists())


class RunWriter:
    """Writes a run directory; process 0 writes the shared files, every process its replay."""

    def __init__(self, run_dir: Path, cfg: TeacherConfig):
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.main = jax.process_index() == 0

    def start(self, info: dict[str, Any]) -> None:
        """A fresh run: config.json written, old metrics dropped."""
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / METRICS).unlink(missing_ok=True)
            (self.run_dir / TIMING).unlink(missing_ok=True)
            atomic_write_json(self.run_dir / CONFIG, info)
        barrier("crl-distill-run-start")

    def rewind(self, epoch: int) -> list[dict]:
        """Drop metric and timing rows from `epoch` on (they will be recomputed); the kept rows.

        A kill between a checkpoint and its metrics line loses that one line; fewer rows than
        that (or rows out of order) mean the file was damaged, and rewriting it from what is
        left would destroy the rest for good, so that is refused.
        """
        rows = [r for r in read_metrics(self.run_dir) if r.get("epoch", epoch) < epoch]
        kept = [r.get("epoch") for r in rows]
        if len(kept) < epoch - 1 or kept != list(range(len(kept))):
            raise CrlDistillError(f"{self.run_dir / METRICS}: damaged (rows for epochs {kept[:8]} "
                                  f"but the checkpoint is at epoch {epoch}); restore it or start "
                                  f"a new run")
        if self.main:
            for name in (METRICS, TIMING):
                kept = [r for r in read_jsonl(self.run_dir / name) if r.get("epoch", epoch) < epoch]
                text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
                atomic_write(self.run_dir / name, lambda f, t=text: f.write(t), binary=False)
        for stale in checkpoint_dir(self.run_dir).glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a killed write; never a checkpoint
        barrier("crl-distill-run-rewind")
        return rows

    def save(self, carry: Carry, shardings: Carry, epoch: int, with_replay: bool) -> None:
        """Checkpoint after `epoch` epochs: replay shares first (every process), then, once all
        are on disk, the parameter checkpoint (process 0), then pruning."""
        ckpts = checkpoint_dir(self.run_dir)
        if with_replay:
            local = _to_host_local(_data_part(carry), _data_part(shardings))
            name = _replay_name(epoch, jax.process_index(), jax.process_count())
            save_pytree(ckpts / name, local, _meta(self.cfg, epoch, REPLAY_FORMAT))
            barrier(f"crl-distill-replay-{epoch}")
        if self.main:
            save_pytree(ckpts / f"epoch-{epoch:06d}.npz", state_part(carry), _meta(self.cfg, epoch))
            if with_replay:
                (self.run_dir / REPLAY_REQUEST).unlink(missing_ok=True)
            for old in epoch_checkpoints(self.run_dir)[:-KEEP_CHECKPOINTS]:
                old.unlink(missing_ok=True)
        for old in _replay_epochs(self.run_dir, jax.process_index())[KEEP_CHECKPOINTS:]:
            name = _replay_name(old, jax.process_index(), jax.process_count())
            (ckpts / name).unlink(missing_ok=True)

    def save_best(self, carry: Carry, epoch: int) -> None:
        """The parameters alone (no optimiser state) as best.npz."""
        if self.main:
            ts = carry.train.replace(actor_opt=None, critic_opt=None, alpha_opt=None)
            params_only = Carry(train=ts, replay=None, env_state=None, episode=None, key=None)
            save_pytree(checkpoint_dir(self.run_dir) / BEST, params_only, _meta(self.cfg, epoch))

    def append(self, row: dict, timing: dict) -> None:
        if self.main:
            append_jsonl(self.run_dir / METRICS, row)
            append_jsonl(self.run_dir / TIMING, timing)


def load_latest(run_dir: Path, template: Carry, shardings: Carry, max_epoch: int | None = None
                ) -> tuple[Carry, int, Carry | None, int | None]:
    """The newest parameter checkpoint that reads cleanly (a damaged newest one falls back to
    the older), at or before `max_epoch` if given, and the newest replay every process can
    read at or before its epoch.

    Returns (state carry with replay/env fields None, its epoch, data carry or None, its epoch).
    Every process must call it (the replay choice is agreed collectively).
    """
    errors = []
    for path in reversed(epoch_checkpoints(run_dir, max_epoch)):
        try:
            state, meta = load_pytree(path, state_part(template), CHECKPOINT_FORMAT)
        except CrlDistillError as e:
            errors.append(str(e))
            continue
        epoch = int(meta["epoch"])
        break
    else:
        raise CrlDistillError(f"{run_dir}: no readable checkpoint ({'; '.join(errors) or 'none found'})")
    state = _to_global(state, state_part(shardings))
    local_t = _local_template(_data_part(template), _data_part(shardings))
    # Every process walks the same list (the shared directory), so the collective calls match.
    for replay_epoch in (e for e in _replay_epochs(run_dir) if e <= epoch):
        name = _replay_name(replay_epoch, jax.process_index(), jax.process_count())
        try:
            data, _ = load_pytree(checkpoint_dir(run_dir) / name, local_t, REPLAY_FORMAT)
        except CrlDistillError:
            data = None
        if _all_processes(data is not None):
            return state, epoch, _to_global(data, _data_part(shardings)), replay_epoch
    return state, epoch, None, None
