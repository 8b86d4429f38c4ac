"""Checkpoints as .npz files of named arrays plus a JSON header; never pickles.

Each leaf is stored under its pytree key path, so a reader can restore a subset (e.g. only the
actor and critic parameters) into a template pytree and check every shape and dtype. Files
are written atomically; a file without our header is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from crl_distill.errors import CrlDistillError
from crl_distill.fileio import atomic_write

META_KEY = "__meta__"


def _leaves_by_path(tree: Any) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def save_pytree(path: str | Path, tree: Any, meta: dict[str, Any]) -> Path:
    """Atomically write `tree`'s leaves and `meta` (must contain "format") to `path`."""
    if "format" not in meta:
        raise ValueError("meta needs a 'format' entry")
    arrays = {k: np.asarray(jax.device_get(v)) for k, v in _leaves_by_path(tree).items()}
    arrays[META_KEY] = np.asarray(json.dumps(meta))
    # Straight into the temp file: a replay buffer of gigabytes is not copied into memory again.
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def peek_format(path: str | Path) -> str:
    """The `format` of a crl-distill checkpoint, or a one-line error for anything else."""
    with _open(path, "crl-distill") as z:
        if META_KEY not in z.files:
            raise CrlDistillError(f"{path}: not a crl-distill checkpoint (no header)")
        try:
            return str(json.loads(str(z[META_KEY]))["format"])
        except Exception:
            raise CrlDistillError(f"{path}: corrupt checkpoint header") from None


def read_meta(path: str | Path, expected_format: str) -> dict[str, Any]:
    """The JSON header of a checkpoint; refuses missing, corrupt or foreign files."""
    with _open(path, expected_format) as z:
        return _meta(z, path, expected_format)


def load_pytree(path: str | Path, template: Any, expected_format: str) -> tuple[Any, dict]:
    """Restore the leaves of `template` (arrays or ShapeDtypeStructs) from `path`.

    Keys in the file that the template lacks are ignored, so a subset can be read.
    """
    with _open(path, expected_format) as z:
        meta = _meta(z, path, expected_format)
        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for key_path, want in flat:
            key = jax.tree_util.keystr(key_path)
            if key not in z.files:
                raise CrlDistillError(f"{path}: checkpoint has no entry {key!r} (written by a "
                                      f"different configuration or version)")
            try:
                got = z[key]
            except Exception as e:  # zlib/zip errors from a damaged member
                raise CrlDistillError(f"{path}: corrupt checkpoint entry {key!r} ({e})") from None
            if tuple(got.shape) != tuple(want.shape) or got.dtype != np.dtype(want.dtype):
                raise CrlDistillError(
                    f"{path}: entry {key!r} is {got.dtype}{list(got.shape)}, expected "
                    f"{np.dtype(want.dtype)}{list(want.shape)} (config mismatch)")
            leaves.append(got)
    return jax.tree_util.tree_unflatten(treedef, leaves), meta


class _open:
    def __init__(self, path: str | Path, expected_format: str):
        self.path = Path(path)
        if not self.path.is_file():
            raise CrlDistillError(f"{self.path}: no such checkpoint file")
        try:
            self.z = np.load(self.path, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise CrlDistillError(
                f"{self.path}: not a crl-distill {expected_format} checkpoint (unreadable: "
                f"{type(e).__name__})") from None
        if not isinstance(self.z, np.lib.npyio.NpzFile):
            raise CrlDistillError(f"{self.path}: not a crl-distill {expected_format} checkpoint")

    def __enter__(self):
        return self.z

    def __exit__(self, *exc):
        self.z.close()


def _meta(z: Any, path: Any, expected_format: str) -> dict[str, Any]:
    if META_KEY not in z.files:
        raise CrlDistillError(f"{path}: not a crl-distill {expected_format} checkpoint (no header)")
    try:
        meta = json.loads(str(z[META_KEY]))
    except Exception:
        raise CrlDistillError(f"{path}: corrupt checkpoint header") from None
    if not isinstance(meta, dict):
        raise CrlDistillError(f"{path}: corrupt checkpoint header (not a JSON object)")
    if meta.get("format") != expected_format:
        raise CrlDistillError(
            f"{path}: is a {meta.get('format')!r} file, expected a {expected_format!r} checkpoint")
    return meta


def params_sha256(params: Any) -> str:
    """SHA-256 over every parameter's bytes in pytree order (names included)."""
    h = hashlib.sha256()
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in flat:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()
