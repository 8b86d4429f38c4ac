"""A student set: the directory `distill` writes, and the one module that knows its files.

    DIR/config.json            distill settings, students, teacher provenance
    DIR/student-<DxW>.npz      one checkpoint per student (atomic)
    DIR/.progress/             the loop state of a student whose distillation was interrupted
    DIR/distill_report.json    teacher and students on the same seeds: success, retention, ...
    DIR/retention.png          retention against student size
    DIR/.distill.lock          held by the process distilling into DIR (`lock`; removed at its end)

The rule that picks the student to export lives here too (`pick_row`): the smallest student
that keeps >= `RETAIN` of the teacher's success, else the one that keeps the most.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crl_distill import dirlock
from crl_distill.errors import CrlDistillError
from crl_distill.fileio import atomic_write_json, read_json_object

CONFIG = "config.json"
REPORT = "distill_report.json"
RETENTION_PLOT = "retention.png"
PREFIX, SUFFIX = "student-", ".npz"
LOCK = ".distill.lock"
#: the retention (student success / teacher success) a student must keep to be picked first
RETAIN = 0.95


def student_file(set_dir: Path, name: str) -> Path:
    return Path(set_dir) / f"{PREFIX}{name}{SUFFIX}"


def progress_file(set_dir: Path, name: str) -> Path:
    return Path(set_dir) / ".progress" / f"{PREFIX}{name}{SUFFIX}"


def report_file(set_dir: Path) -> Path:
    return Path(set_dir) / REPORT


def plot_file(set_dir: Path) -> Path:
    return Path(set_dir) / RETENTION_PLOT


def student_files(set_dir: Path) -> list[Path]:
    return sorted(Path(set_dir).glob(f"{PREFIX}*{SUFFIX}"))


def student_names(set_dir: Path) -> list[str]:
    return [p.name.removeprefix(PREFIX).removesuffix(SUFFIX) for p in student_files(set_dir)]


def is_student_set(path: Path) -> bool:
    return Path(path).is_dir() and bool(student_files(path) or report_file(path).exists())


def lock(set_dir: Path) -> None:
    """Hold `set_dir`'s lock until the calling `@dirlock.releases_locks` function ends; one line
    naming the holder's pid when another process distills into it. Readers never take it."""
    dirlock.hold(Path(set_dir) / LOCK, "student distillation")


def prepare(set_dir: Path, config: dict[str, Any]) -> None:
    """Create the directory, drop writes a kill left half-done, and record the settings."""
    set_dir = Path(set_dir)
    set_dir.mkdir(parents=True, exist_ok=True)
    for stale in (set_dir / ".progress").glob(".*.tmp"):
        stale.unlink(missing_ok=True)  # left by a write that was killed; never a checkpoint
    atomic_write_json(set_dir / CONFIG, config)


def finish_student(set_dir: Path, name: str) -> None:
    """The student's checkpoint is written: its loop state is no longer needed."""
    progress_file(set_dir, name).unlink(missing_ok=True)


def write_report(set_dir: Path, report: dict[str, Any]) -> Path:
    return atomic_write_json(report_file(set_dir), report)


def read_report(set_dir: Path) -> dict[str, Any]:
    """The distill report, or one line naming the file when it is damaged."""
    path = report_file(set_dir)
    report = read_json_object(path, "distill report")
    rows = report.get("students")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(
            r.get("name"), str) for r in rows):
        raise CrlDistillError(f"{path}: corrupt distill report")
    return report


def pick_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report row of the student to export (see the module docstring)."""
    if not rows:
        raise CrlDistillError("the distill report lists no students")

    def number(r: dict, key: str) -> float:
        v = r.get(key, 0)
        return float(v) if isinstance(v, int | float) and v == v else 0.0

    good = [r for r in rows if number(r, "retention") >= RETAIN]
    return (min(good, key=lambda r: number(r, "actor_params")) if good
            else max(rows, key=lambda r: number(r, "retention")))


def pick(set_dir: Path, name: str | None = None) -> Path:
    """The student file named `name`, else the one `pick_row` chooses from the report (else the
    first student file, when there is no report)."""
    set_dir = Path(set_dir)
    if name is not None:
        path = student_file(set_dir, name)
        if not path.is_file():
            raise CrlDistillError(f"{set_dir}: no student {name!r} (have: "
                                  f"{', '.join(student_names(set_dir)) or 'none'})")
        return path
    files = student_files(set_dir)
    if not files:
        raise CrlDistillError(f"{set_dir}: no {PREFIX}*{SUFFIX} files (not a student directory)")
    if report_file(set_dir).is_file():
        path = student_file(set_dir, pick_row(read_report(set_dir)["students"])["name"])
        if path.is_file():
            return path
    return files[0]
