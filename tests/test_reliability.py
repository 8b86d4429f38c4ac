"""Kills, corrupt files, hostile inputs, numerical blow-ups (issue: reliability)."""

import hashlib
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crl_distill.cli import main
from crl_distill.distill import DistillConfig, distill
from crl_distill.export import export
from crl_distill.runtime import OnnxPolicy, PolicyError
from crl_distill.teacher.config import NetConfig, TeacherConfig
from crl_distill.teacher.crl import CRL
from crl_distill.teacher.train import NonFiniteError, train_teacher

MICRO = dict(env="pointmaze_u", actor=NetConfig(4, 32), critic=NetConfig(4, 32), num_envs=16,
             unroll_length=10, batch_size=32, updates_per_iter=5, iters_per_epoch=2, epochs=2,
             replay_capacity=100, prefill_steps=20, num_eval_envs=16, seed=0)
DCFG = DistillConfig(iterations=3, num_envs=16, steps_per_iter=20, sgd_steps_per_iter=20,
                     batch_size=32, eval_episodes=16)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    run = root / "teacher"
    train_teacher(TeacherConfig(**MICRO), run, progress=False)
    students = root / "students"
    distill(run, students="1x16", out=students, config=DCFG, progress=False)
    onnx_path = export(students, out=root / "policy.onnx", episodes=16).path
    return {"root": root, "run": run, "students": students, "onnx": onnx_path}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nan_batch_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = CRL.sgd_step
    poison_after = MICRO["updates_per_iter"] * MICRO["iters_per_epoch"]  # epoch 1 onwards

    def poisoned(self, ts, batch, key):
        nan = jnp.where(ts.sgd_steps >= poison_after, jnp.nan, 0.0)
        return real(self, ts, {**batch, "state": batch["state"] + nan}, key)

    monkeypatch.setattr(CRL, "sgd_step", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"non-finite .* epoch 1 .*SGD steps up to 20"):
        train_teacher(TeacherConfig(**MICRO), out, progress=False)
    ckpts = sorted((out / "checkpoints").glob("epoch-*.npz"))
    assert [c.name for c in ckpts] == ["epoch-000001.npz"]
    from crl_distill.teacher import load_teacher

    t = load_teacher(out)  # the kept checkpoint is whole and finite
    assert np.isfinite(np.asarray(t.act(np.zeros((2, 4), np.float32)))).all()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_learning_rate_is_refused_up_front():
    from crl_distill.errors import CrlDistillError

    with pytest.raises(CrlDistillError, match="learning rate"):
        TeacherConfig(**{**MICRO, "learning_rate": float("nan")})


def _corrupt_variants(src, tmp_path, stem):
    data = src.read_bytes()
    rng = np.random.default_rng(0)
    variants = {
        "truncated": data[: len(data) // 3],
        "random": rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "empty": b"",
    }
    out = {}
    for kind, blob in variants.items():
        p = tmp_path / f"{stem}-{kind}{src.suffix}"
        p.write_bytes(blob)
        out[kind] = p
    return out


def _run_cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def test_corrupt_inputs_end_with_one_line_and_exit_code_2(artifacts, tmp_path, capsys):
    ckpt = sorted((artifacts["run"] / "checkpoints").glob("epoch-*.npz"))[-1]
    student_file = artifacts["students"] / "student-1x16.npz"
    bad_teacher = _corrupt_variants(ckpt, tmp_path, "teacher")
    bad_student = _corrupt_variants(student_file, tmp_path, "student")
    bad_onnx = _corrupt_variants(artifacts["onnx"], tmp_path, "policy")
    cases = []
    for p in bad_teacher.values():
        cases += [["student", "--from", str(p), "--out", str(tmp_path / "s-out")],
                  ["export", "--from", str(p), "--out", str(tmp_path / "x.onnx")],
                  ["eval", "--from", str(p), "--episodes", "4"]]
    # Well-formed files of the wrong kind for the command.
    metrics = artifacts["run"] / "metrics.jsonl"
    cases += [["student", "--from", str(student_file), "--out", str(tmp_path / "s-out")],
              ["student", "--from", str(artifacts["onnx"]), "--out", str(tmp_path / "s-out")],
              ["export", "--from", str(artifacts["onnx"]), "--out", str(tmp_path / "x.onnx")],
              ["eval", "--from", str(metrics), "--episodes", "4"],
              ["bench", "--from", str(metrics), "--no-onnx-deep"]]
    for p in bad_student.values():
        cases += [["export", "--from", str(p), "--out", str(tmp_path / "x.onnx")],
                  ["eval", "--from", str(p), "--episodes", "4"]]
    for p in bad_onnx.values():
        cases += [["eval", "--from", str(p), "--episodes", "4"],
                  ["bench", "--from", str(p), "--no-onnx-deep"]]
    # A run directory whose config.json is damaged, for --resume.
    broken_run = tmp_path / "broken-run"
    broken_run.mkdir()
    (broken_run / "config.json").write_text("{not json")
    cases.append(["teacher", "--resume", str(broken_run)])
    before = {p: _sha(p) for p in [ckpt, student_file, artifacts["onnx"]]}
    for argv in cases:
        code, err = _run_cli(argv, capsys)
        assert code == 2, (argv, err)
        assert "Traceback" not in err and len(err.splitlines()) == 1, (argv, err)
        assert err.startswith("error:"), (argv, err)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "s-out").exists()
    assert before == {p: _sha(p) for p in before}, "an existing file was modified"


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_runtime_fuzz_returns_safe_actions_or_documented_errors(artifacts, data):
    policy = _policy_cache(artifacts["onnx"])
    kind = data.draw(st.sampled_from(["array", "state_goal", "python", "scalar"]))
    dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8,
                              np.bool_, np.complex64, np.str_, object])
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)
    try:
        if kind == "array":
            arr = data.draw(hnp.arrays(dtypes, shapes, elements=None))
            out = policy.act(arr)
        elif kind == "state_goal":
            s = data.draw(hnp.arrays(np.float64, shapes))
            g = data.draw(hnp.arrays(np.float64, shapes))
            out = policy.act(state=s, goal=g)
        elif kind == "python":
            out = policy.act(data.draw(st.lists(st.floats(allow_nan=True), max_size=6)))
        else:
            out = policy.act(data.draw(st.one_of(st.none(), st.floats(), st.text(max_size=3))))
    except PolicyError:
        return
    out = np.asarray(out)
    assert out.dtype == np.float32 and out.shape[-1] == policy.action_size
    assert np.isfinite(out).all()
    assert (out >= policy.action_low).all() and (out <= policy.action_high).all()


_POLICIES = {}


def _policy_cache(path):
    if path not in _POLICIES:
        _POLICIES[path] = OnnxPolicy(path)
    return _POLICIES[path]


def test_same_seed_gives_identical_metrics(tmp_path):
    for name in ("a", "b"):
        train_teacher(TeacherConfig(**MICRO), tmp_path / name, progress=False)
    a = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert len(a.splitlines()) == MICRO["epochs"]


def test_two_concurrent_exports_leave_one_valid_file(artifacts, tmp_path):
    target = tmp_path / "shared.onnx"
    cmd = [sys.executable, "-m", "crl_distill.cli", "export", "--from",
           str(artifacts["students"]), "--out", str(target), "--skip-gates"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        # One may find the other holding the directory's lock (exit 2, one line naming it).
        assert p.returncode == 0 or (p.returncode == 2 and b"in use" in err), err.decode()[-2000:]
        codes.append(p.returncode)
    assert 0 in codes
    policy = OnnxPolicy(target)
    assert policy.act(np.zeros(4, np.float32)).shape == (2,)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shared.onnx")]


def test_killed_distillation_resumes_from_its_last_iteration(artifacts, tmp_path):
    out = tmp_path / "students"

    class Killed(Exception):
        pass

    import crl_distill.distill.run as run_mod

    real = run_mod.StudentRun.train
    calls = {"n": 0}

    def killing(self, log=None, **kw):
        def kill_after_first(row):
            calls["n"] += 1
            if row["iteration"] == 1:
                raise Killed
        return real(self, log=kill_after_first, **kw)

    run_mod.StudentRun.train = killing
    try:
        with pytest.raises(Killed):
            distill(artifacts["run"], students="1x16", out=out, config=DCFG, progress=False)
    finally:
        run_mod.StudentRun.train = real
    progress = out / ".progress" / "student-1x16.npz"
    assert progress.is_file() and not (out / "student-1x16.npz").exists()
    stale = out / ".progress" / ".student-1x16.npz.abc.tmp"  # as a write killed mid-way leaves
    stale.write_bytes(b"partial")
    resumed = distill(artifacts["run"], students="1x16", out=out, config=DCFG, progress=False)
    hist = resumed.report["students"][0]["history"]
    assert [h["iteration"] for h in hist] == [0, 1, 2] and not progress.exists()
    assert not stale.exists()
    # The resumed student equals one trained without interruption (same seeds, same data).
    ref = json.loads((artifacts["students"] / "distill_report.json").read_text())["students"][0]
    assert [h["loss/action"] for h in hist] == pytest.approx(
        [h["loss/action"] for h in ref["history"]], rel=1e-5)
    # A finished student with the same settings is reused, not retrained.
    again = distill(artifacts["run"], students="1x16", out=out, config=DCFG, progress=False)
    assert again.report["students"][0]["history"] == hist
