"""Every command that reads a file, given each file it reads damaged five ways (issue #14).

Damage: `truncated` (first half), `bitflip` (3 bytes XORed with 0xFF at the middle),
`random` (random bytes, same length), `wrong_json` (valid JSON of the wrong shape: `[1, 2]`
for JSON files, `{"x": 1}` for JSONL and binary files), `empty`.

The rule (`expected` below): every case ends with exit code 2 and one line, `error: ...`,
naming the damaged file, no traceback, and no existing file in the artifact tree changed
(SHA-256 before and after), unless the damage is one the command is built to absorb; those
cases exit 0 and must show the right behaviour:

* `teacher --resume` with a damaged newest checkpoint falls back to the older one and
  retrains the lost epoch: the run ends with a readable newest checkpoint and a metrics.jsonl
  byte-identical to the undamaged run's.
* `teacher --resume` with a truncated metrics.jsonl resumes only when no more than the one row
  a kill can lose is missing (the cut inside the last row); otherwise it refuses.
* A bit flip at the middle of a teacher checkpoint lands in the optimiser state (asserted from
  the zip layout), which loading a policy (`student`, `export`, `eval`, `pipeline`) never
  reads: those commands run as usual on the intact actor and critic.
* A bit flip at the middle of the reference pickle breaks its opcode stream (the test asserts
  so with pickletools, which executes nothing), so it is refused. (A flip inside a weight
  array would go unnoticed: the reference format has no checksum.)
* `pipeline` over an existing directory redoes a stage whose output is damaged (a student
  file: retrained; policy.onnx or export_report.json: exported again; latency.json: measured
  again), and ends with valid files; a damaged teacher (config, metrics, checkpoint) it cannot
  redo without discarding the run, so it refuses.

Cases that succeed by redoing real work take 10-60 s each and are marked `slow` (CI skips
them; run them with `pytest -n 0 -m slow tests/test_fuzz_readers.py`). The rest run in CI:
`pytest -n 0 tests/test_fuzz_readers.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crl_distill.cli import main

EPOCHS = 2
TEACHER = dict(width=32, num_envs=16, unroll_length=10, batch_size=32, updates_per_iter=5,
               iters_per_epoch=2, epochs=EPOCHS, replay_capacity=100, prefill_steps=20,
               num_eval_envs=16)
DISTILL = dict(iterations=2, num_envs=16, steps_per_iter=20, sgd_steps_per_iter=20, batch_size=32)
EPISODES = 8

# file kind -> path inside the artifact tree (the pipeline's layout: teacher/, students/, ...)
KINDS = {
    "config": "teacher/config.json",
    "metrics": "teacher/metrics.jsonl",
    "checkpoint": f"teacher/checkpoints/epoch-{EPOCHS:06d}.npz",
    "student": "students/student-1x16.npz",
    "distill_report": "students/distill_report.json",
    "onnx": "policy.onnx",
    "export_report": "export_report.json",
    "latency": "latency.json",
    "pkl": "ref.pkl",
}
CORRUPTIONS = ("truncated", "bitflip", "random", "wrong_json", "empty")
TINY_STUDENT = ["--students", "1x16", "--iterations", "1", "--num-envs", "16", "--steps-per-iter",
                "20", "--sgd-steps", "5", "--batch-size", "32", "--episodes", "4",
                "--no-progress", "--logger", "none"]
# command id -> (argv with {a}: the artifact tree, {new}: a fresh directory; kinds it reads)
COMMANDS = {
    "teacher-resume": (["teacher", "--resume", "{a}/teacher", "--no-progress", "--logger", "none"],
                       ["config", "metrics", "checkpoint"]),
    "student-run": (["student", "--from", "{a}/teacher", "--out", "{new}/s", *TINY_STUDENT],
                    ["checkpoint"]),
    "student-pkl": (["student", "--from", "{a}/ref.pkl", "--env", "pointmaze_u", "--out",
                     "{new}/s", *TINY_STUDENT], ["pkl"]),
    "export-students": (["export", "--from", "{a}/students", "--out", "{new}/x.onnx",
                         "--episodes", "4"], ["distill_report", "student"]),
    "export-run": (["export", "--from", "{a}/teacher", "--out", "{new}/t.onnx", "--episodes", "4"],
                   ["checkpoint"]),
    "eval-run": (["eval", "--from", "{a}/teacher", "--episodes", "4"], ["checkpoint"]),
    "eval-students": (["eval", "--from", "{a}/students", "--episodes", "4"],
                      ["distill_report", "student"]),
    "eval-onnx": (["eval", "--from", "{a}/policy.onnx", "--episodes", "4"], ["onnx"]),
    "bench-onnx": (["bench", "--from", "{a}/policy.onnx", "--no-onnx-deep", "--deep-depth", "4"],
                   ["onnx"]),
    "bench-students": (["bench", "--from", "{a}/students", "--no-onnx-deep", "--deep-depth", "4"],
                       ["distill_report", "student"]),
    "import": (["import", "{a}/ref.pkl", "--env", "pointmaze_u", "--out", "{new}/imported"],
               ["pkl"]),
    "verify": (["verify", "{a}/policy.onnx"], ["onnx"]),
    "inspect": (["inspect", "{a}/policy.onnx"], ["onnx"]),
    "pipeline": (["pipeline", "--out", "{a}", "--students", "1x16", "--episodes", str(EPISODES),
                  "--no-progress", "--logger", "none"],
                 ["config", "metrics", "checkpoint", "student", "onnx", "export_report",
                  "latency"]),
}
# Commands that only load a teacher's policy (actor and critic), never its optimiser state.
POLICY_READERS = ("student-run", "export-run", "eval-run", "pipeline")


def expected(cmd: str, kind: str, corruption: str) -> str:
    """"ok" (exit 0, checked by `_check_ok`) or "fail" (exit 2, one line); see the docstring."""
    if cmd == "teacher-resume" and kind == "checkpoint":
        return "ok"
    if cmd == "teacher-resume" and kind == "metrics" and corruption == "truncated":
        return "rule"  # decided from the bytes kept: see _truncated_rows_ok
    if kind == "checkpoint" and corruption == "bitflip" and cmd in POLICY_READERS:
        return "ok"
    if cmd == "pipeline" and kind in ("student", "onnx", "export_report", "latency"):
        return "ok"
    return "fail"


def _slow(cmd: str, kind: str, corruption: str) -> bool:
    # What exits 0 here retrains, distills, exports or measures; `import` only converts.
    return expected(cmd, kind, corruption) == "ok" and cmd != "import"


CASES = [pytest.param(cmd, kind, c, id=f"{cmd}-{kind}-{c}",
                      marks=[pytest.mark.slow] if _slow(cmd, kind, c) else [])
         for cmd, (_, kinds) in COMMANDS.items() for kind in kinds for c in CORRUPTIONS]


def corrupt(data: bytes, kind: str, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "bitflip":
        # An odd run of 0xFF-flipped bytes inside ASCII text is never valid UTF-8, so a damaged
        # JSON file cannot parse into something else by chance.
        out, mid = bytearray(data), len(data) // 2
        for i in range(mid, mid + 3):
            out[i] ^= 0xFF
        return bytes(out)
    if how == "random":
        return np.random.default_rng(14).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    if how == "wrong_json":
        return b"[1, 2]" if kind.endswith("report") or kind in ("config", "latency") else b'{"x": 1}\n'
    assert how == "empty"
    return b""


def _sha(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One tiny pipeline tree (teacher, students, export), kept pristine; each case works on a
    copy at one fixed path, because students record their teacher's absolute path."""
    from test_reference_import import write_reference_pickle

    from crl_distill.distill import DistillConfig, distill
    from crl_distill.export import export
    from crl_distill.teacher import configure, train_teacher

    root = tmp_path_factory.mktemp("fuzz")
    work = root / "work" / "a"
    cfg = configure("pointmaze_u", depth=4, seed=0, **TEACHER)
    train_teacher(cfg, work / "teacher", progress=False, logger="none")
    distill(work / "teacher", students="1x16", out=work / "students", progress=False,
            logger="none", config=DistillConfig(eval_episodes=EPISODES, **DISTILL))
    export(work / "students" / "student-1x16.npz", out=work / "policy.onnx", episodes=EPISODES)
    write_reference_pickle(work / "ref.pkl", 3, False)
    pristine = root / "pristine"
    shutil.copytree(work, pristine)
    return {"work": work, "pristine": pristine}


def _with_latency(built) -> None:
    """latency.json in the pristine tree (measured once, only for the cases that need it)."""
    lat = built["pristine"] / "latency.json"
    if lat.is_file():
        return
    from crl_distill.export.latency import run_latency_benchmark
    from crl_distill.fileio import atomic_write_json

    report = json.loads((built["pristine"] / "export_report.json").read_text())
    shutil.rmtree(built["work"])
    shutil.copytree(built["pristine"], built["work"])
    w = built["work"]
    r = run_latency_benchmark(w / "policy.onnx", w / "teacher", deep_depth=4, onnx_deep=False,
                              work_dir=w / ".bench", budget_s=0.1, log=lambda _m: None)
    atomic_write_json(lat, {**r, "student_params_sha256": report["params_sha256"]})


def _tiny_pipeline(monkeypatch) -> None:
    """`crl-distill pipeline` with this file's tiny budgets (the CLI has no flags for them)."""
    import crl_distill.pipeline as pl

    real = pl.run_pipeline

    def tiny(**kw):
        return real(**{**kw, "teacher_overrides": TEACHER, "distill_overrides": DISTILL,
                       "parity_episodes": EPISODES, "deep_depth": 4})

    monkeypatch.setattr(pl, "run_pipeline", tiny)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)  # typer returns normally when standalone_mode ends cleanly
    cap = capsys.readouterr()
    return e.value.code or 0, cap.out + cap.err


def _truncated_rows_ok(pristine: bytes) -> bool:
    """A kill loses at most the row being appended: resume is right iff the cut keeps every
    row but the last."""
    kept = pristine[: len(pristine) // 2].count(b"\n")
    return kept >= EPOCHS - 1


def _check_ok(cmd: str, kind: str, corruption: str, a: Path, new: Path, pristine: Path,
              output: str) -> None:
    from crl_distill.runtime import verify
    from crl_distill.student.model import load_student
    from crl_distill.teacher import load_teacher

    if cmd == "teacher-resume":
        assert (a / KINDS["metrics"]).read_bytes() == (pristine / KINDS["metrics"]).read_bytes()
        assert load_teacher(a / "teacher").epoch == EPOCHS
    elif cmd.startswith("student"):
        load_student(new / "s" / "student-1x16.npz")
    elif cmd == "export-run":
        verify(new / "t.onnx")
    elif cmd == "eval-run":
        assert "success_any" in output
    elif cmd == "import":
        t = load_teacher(new / "imported")
        assert t.config.env == "pointmaze_u"
    elif cmd == "pipeline":
        summary = json.loads((a / "summary.json").read_text())
        assert [r["name"] for r in summary["students"]] == ["1x16"]
        verify(a / "policy.onnx")
        load_student(a / KINDS["student"])
        report = json.loads((a / "export_report.json").read_text())
        lat = json.loads((a / "latency.json").read_text())
        assert report["passed"] and lat["student_params_sha256"] == report["params_sha256"]
    else:
        raise AssertionError(f"no check for {cmd}")


@pytest.mark.parametrize("cmd,kind,corruption", CASES)
def test_damaged_input(built, cmd, kind, corruption, tmp_path, capsys, monkeypatch):
    if cmd == "pipeline":
        if expected(cmd, kind, corruption) == "ok":
            _with_latency(built)  # else the case fails before the latency stage
        _tiny_pipeline(monkeypatch)
    a, pristine, new = built["work"], built["pristine"], tmp_path / "new"
    shutil.rmtree(a)
    shutil.copytree(pristine, a)
    if cmd != "pipeline":
        (a / "latency.json").unlink(missing_ok=True)
    target = a / KINDS[kind]
    original = target.read_bytes()
    target.write_bytes(corrupt(original, kind, corruption))
    if kind == "checkpoint" and corruption == "bitflip":
        # The premise of the "ok" rule for policy readers: the flip is in optimiser state.
        mid = len(original) // 2
        member = [i.filename for i in zipfile.ZipFile(pristine / KINDS[kind]).infolist()
                  if i.header_offset <= mid < i.header_offset + 200 + i.compress_size]
        assert member and "_opt" in member[-1], member
    if kind == "pkl" and corruption == "bitflip":
        with pytest.raises(ValueError):  # the premise of "fail": the opcodes, not weights, broke
            pickletools.dis(target.read_bytes(), out=io.StringIO())
    want = expected(cmd, kind, corruption)
    if want == "rule":
        want = "ok" if _truncated_rows_ok(original) else "fail"
    before = _sha(a)
    argv = [s.format(a=a, new=new) for s in COMMANDS[cmd][0]]
    code, output = _run(argv, capsys)
    lines = [ln for ln in output.splitlines() if ln.strip()]
    if want == "fail":
        assert code == 2, (argv, output[-3000:])
        assert len(lines) == 1 and lines[0].startswith("error:"), output[-3000:]
        assert "Traceback" not in output
        assert target.name in lines[0], lines[0]
        after = _sha(a)
        assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    else:
        assert code == 0, (argv, output[-3000:])
        assert "Traceback" not in output
        _check_ok(cmd, kind, corruption, a, new, pristine, output)
