"""An exported policy: the one module that knows its files.

    X.onnx                 the policy; its metadata holds the interface, gates, golden pairs and
                           the hash of the weights it was traced from (`crl_distill.runtime`)
    X.critic.onnx          phi and psi, for a student distilled with encoders
    export_report.json     what the last export into this directory did (gates, sizes, times)
    policy.h, policy.c     the C99 policy (`--format c`), policy.xml the robot's model
    .export.lock           held by the process exporting into this directory (`lock`; removed
                           at its end): the report and the C files are per directory
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crl_distill import dirlock
from crl_distill.errors import CrlDistillError
from crl_distill.fileio import atomic_write_json, read_json_object

REPORT = "export_report.json"
LOCK = ".export.lock"


def report_file(onnx_path: Path) -> Path:
    return Path(onnx_path).parent / REPORT


def lock_file(onnx_path: Path) -> Path:
    return Path(onnx_path).parent / LOCK


def lock(onnx_path: Path) -> None:
    """Hold the lock of `onnx_path`'s directory until the calling `@dirlock.releases_locks`
    function ends; one line naming the holder's pid when another process exports into it."""
    dirlock.hold(lock_file(onnx_path), "export")


def critic_file(onnx_path: Path) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".critic.onnx")


def default_file(source_dir: Path, kind: str) -> Path:
    """Where `export` writes when no --out is given: beside the source."""
    return Path(source_dir) / ("policy.onnx" if kind == "student" else "teacher.onnx")


def write_report(onnx_path: Path, report: dict[str, Any]) -> Path:
    return atomic_write_json(report_file(onnx_path), report)


def read_report(onnx_path: Path) -> dict[str, Any]:
    """The export report beside `onnx_path`, or one line naming it when it is damaged."""
    return read_json_object(report_file(onnx_path), "export report")


def current_report(onnx_path: Path, params_sha256: str) -> dict[str, Any] | None:
    """The export report when `onnx_path` passes `verify` (its weights hash and golden pairs),
    passed its gates, holds exactly the weights hashed as `params_sha256`, and its report says
    the same; None when the file must be exported (again), which rewrites both."""
    from crl_distill.runtime import read_metadata, verify

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        return None
    try:
        verify(onnx_path)
        meta = read_metadata(onnx_path)
        if meta.get("gates_skipped") or meta.get("params_sha256") != params_sha256:
            return None
        report = read_report(onnx_path)
    except CrlDistillError:
        return None
    ok = report.get("passed") is True and report.get("params_sha256") == params_sha256
    return report if ok else None
