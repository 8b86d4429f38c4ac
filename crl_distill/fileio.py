"""Atomic file writes: a reader (or a killed writer) never sees a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crl_distill.errors import CrlDistillError


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, fsync, then rename over `path`.

    rename(2) within one directory is atomic on POSIX, so `path` holds either the old or the new
    content, never a mix, even under SIGKILL or concurrent writers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write(path, lambda f: f.write(text), binary=False)


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in `path`; one line naming the file (and `what` it should be) when it is
    missing, not UTF-8, not JSON, or JSON of another shape."""
    try:
        obj = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise CrlDistillError(f"{path}: no {what}") from None
    except ValueError:  # not JSON, or not UTF-8
        raise CrlDistillError(f"{path}: corrupt {what}") from None
    if not isinstance(obj, dict):
        raise CrlDistillError(f"{path}: corrupt {what}")
    return obj


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line; a line is written with a single write() call so kills cut whole lines."""
    line = json.dumps(obj, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of objects, dropping a trailing partial line left by a kill mid-write.

    Only the last line, and only when the file does not end with a newline, may be partial:
    every line is appended whole by `append_jsonl`, so a bad line anywhere else (or bytes that
    are not UTF-8, or a line that is not a JSON object) means the file is damaged, and reading
    on would silently drop the rows after it; that raises a one-line CrlDistillError.
    """
    p = Path(path)
    if not p.exists():
        return []
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CrlDistillError(f"{p}: damaged (not UTF-8 text at byte {e.start})") from None
    except OSError as e:
        raise CrlDistillError(f"{p}: unreadable ({e.strerror or type(e).__name__})") from None
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: the write a kill interrupted
                break
            raise CrlDistillError(f"{p}: damaged (line {i + 1} is not JSON)") from None
        if not isinstance(row, dict):
            raise CrlDistillError(f"{p}: damaged (line {i + 1} is not a JSON object)")
        rows.append(row)
    return rows


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks (checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(key: str, path: str | os.PathLike | None) -> dict[str, str]:
    """`{key: file name, key_sha256: hash}` for a file an artifact was made from.

    Exported files travel to other machines: the exporting machine's absolute paths mean
    nothing there and leak its layout, so only the name and the content hash are kept (the
    hash is left out when the file is no longer readable here).
    """
    if path is None:
        return {}
    p = Path(path)
    out = {key: p.name}
    if p.is_file():
        out[f"{key}_sha256"] = file_sha256(p)
    return out


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
