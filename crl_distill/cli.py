"""The `crl-distill` command: a thin layer over the Python API of each stage.

Every user error (`CrlDistillError`) is printed as one line and exits with code 2; nothing in
this module does real work, so a notebook user calls the same functions the CLI calls.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from crl_distill.errors import CrlDistillError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Deep contrastive-RL teachers -> shallow students -> ONNX policies for robots.",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _not_implemented(stage: str) -> NoReturn:
    _fail(f"`crl-distill {stage}` is not implemented yet", code=1)


@app.command()
def envs(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every environment: sizes, goal layout, episode length, success threshold, backend."""
    from crl_distill.envs import REGISTRY, make

    rows = [make(name).describe() for name in REGISTRY]
    if as_json:
        import json

        print(json.dumps(rows, indent=2))
        return
    table = Table(title="crl-distill environments")
    for col in ("name", "obs", "state", "action", "goal", "goal idx", "episode", "success <",
                "backend", "layout"):
        table.add_column(col, overflow="fold")
    for r in rows:
        idx = r["goal_indices"]
        contiguous = idx == list(range(idx[0], idx[-1] + 1))
        table.add_row(
            r["name"], str(r["observation_size"]), str(r["state_size"]), str(r["action_size"]),
            str(r["goal_size"]), f"{idx[0]}:{idx[-1] + 1}" if contiguous else str(idx),
            str(r["episode_length"]), f"{r['success_threshold']:g}", r["backend"], r["layout"],
        )
    console.print(table)


@app.command()
def teacher() -> None:
    """Train a deep goal-conditioned contrastive RL teacher (residual MLPs up to 1000 layers)."""
    _not_implemented("teacher")


@app.command()
def student() -> None:
    """Distill shallow student policies from a teacher checkpoint (`--from RUN_DIR`)."""
    _not_implemented("student")


@app.command()
def export() -> None:
    """Export a student (or teacher) policy to ONNX and run the parity gates."""
    _not_implemented("export")


@app.command("eval")
def eval_() -> None:
    """Evaluate a teacher run, a student directory or an exported ONNX file on fixed seeds."""
    _not_implemented("eval")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # XLA's C++ logging and TF-style warnings are noise for CLI users; errors still surface.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        app(args=argv, standalone_mode=True)
    except CrlDistillError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main", "Path"]
