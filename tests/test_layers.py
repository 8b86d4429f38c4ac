"""Stages never import a later stage (teacher -> student -> distill -> export); shared
measuring and evaluation live below them. Checked on the source, imports inside functions too."""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
ORDER = ["teacher", "student", "distill", "export"]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_stage_imports_a_later_stage():
    bad = []
    for i, stage in enumerate(ORDER):
        later = {f"crl_distill.{s}" for s in ORDER[i + 1:]}
        for f in sorted((ROOT / stage).glob("*.py")):
            for mod in _imports(f):
                if any(mod == m or mod.startswith(m + ".") for m in later):
                    bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, bad


def test_envs_and_shared_modules_import_no_stage():
    stages = {f"crl_distill.{s}" for s in ORDER}
    shared = [*(ROOT / "envs").glob("*.py")] + [ROOT / "crl_distill" / n for n in (
        "timing.py", "metrics.py", "obs_spec.py", "runtime.py", "native.py", "loggers.py",
        "checkpoint.py", "fileio.py", "errors.py", "dirlock.py", "lazy.py", "settings.py")]
    bad = [f"{f.relative_to(ROOT)} imports {m}" for f in shared for m in _imports(f)
           if any(m == s or m.startswith(s + ".") for s in stages)]
    assert not bad, bad
