"""Live views of a run: TensorBoard or Weights & Biases mirrors of metrics.jsonl.

metrics.jsonl stays the source of truth; a logger receives the same rows under the same names,
with env steps (teacher) or the DAgger iteration (students) as the x-axis, plus the run's config.

    logger = make_logger("tensorboard", run_dir, config, start_step=None)
    logger.log({"critic_loss": 0.3, ...}, step=env_steps)
    logger.close()

`tensorboard` writes event files under RUN_DIR/tb/ with tensorboardX (no TensorFlow needed);
`wandb` (the optional extra `crl-distill[wandb]`) keeps its files under RUN_DIR/wandb/ and
honours WANDB_MODE=offline; `none` does nothing. A resumed run passes `start_step`, the last
step its checkpoint holds: TensorBoard purges any later events left by the killed process and
W&B resumes the same run id, so the curve stays one line with no duplicated steps.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from crl_distill.errors import CrlDistillError, require_choice

LOGGERS = ("tensorboard", "wandb", "none")
#: what `--logger` defaults to: local, free, and openable with one command (README)
DEFAULT_LOGGER = "tensorboard"


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics row (nested dicts flattened with '/')."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in _scalars(v).items()})
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def _flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat_config(v, f"{prefix}{k}."))
        elif isinstance(v, list | tuple):
            out[f"{prefix}{k}"] = str(list(v))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Logger:
    """Does nothing; the interface of every logger."""

    kind = "none"

    def log(self, row: dict[str, Any], step: int) -> None:
        """Mirror one metrics row at x = step."""

    def close(self) -> None:
        """Flush and release files."""


class TensorBoardLogger(Logger):
    kind = "tensorboard"

    def __init__(self, run_dir: Path, config: dict[str, Any], start_step: int | None = None):
        from tensorboardX import SummaryWriter

        # purge_step: events at or after it, written by a process that was killed after its
        # last checkpoint, are dropped when this resumed run logs its first event.
        purge = None if start_step is None else start_step + 1
        self.writer = SummaryWriter(logdir=str(run_dir / "tb"), purge_step=purge, flush_secs=10)
        if start_step is None:
            self.writer.add_text("config", "\n".join(
                f"    {k} = {v}" for k, v in sorted(_flat_config(config).items())))

    def log(self, row: dict[str, Any], step: int) -> None:
        for k, v in _scalars(row).items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    kind = "wandb"

    def __init__(self, run_dir: Path, config: dict[str, Any], start_step: int | None = None,
                 project: str | None = None, name: str | None = None):
        try:
            import wandb
        except ImportError:
            raise CrlDistillError("--logger wandb needs the wandb package: pip install "
                                  "'crl-distill[wandb]' (or use --logger tensorboard)") from None
        run_dir.mkdir(parents=True, exist_ok=True)
        # One id per run directory, so a resume continues the same W&B run.
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=project or "crl-distill", name=name or run_dir.name,
                              id=run_id, dir=str(run_dir), config=_flat_config(config),
                              resume="allow", reinit=True)
        self.start_step = start_step

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(_scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


def check_logger(kind: str) -> None:
    """Fail fast (before any compile or write) on an unknown logger or a missing package."""
    require_choice("logger", kind, LOGGERS)
    if kind == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise CrlDistillError("--logger wandb needs the wandb package: pip install "
                                  "'crl-distill[wandb]' (or use --logger tensorboard)") from None


def make_logger(kind: str, run_dir: str | Path, config: dict[str, Any],
                start_step: int | None = None, project: str | None = None,
                name: str | None = None) -> Logger:
    """A logger of `kind` ("tensorboard", "wandb", "none") for `run_dir`."""
    require_choice("logger", kind, LOGGERS)
    run_dir = Path(run_dir)
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir, config, start_step)
    if kind == "wandb":
        return WandbLogger(run_dir, config, start_step, project, name)
    return Logger()


__all__ = ["DEFAULT_LOGGER", "LOGGERS", "Logger", "check_logger", "make_logger"]
