import json
import subprocess
import sys

import jax
import numpy as np
import onnx
import pytest
from helpers import fixed_teacher
from typer.testing import CliRunner

from crl_distill.artifacts import load_artifact
from crl_distill.cli import app
from crl_distill.distill import DistillConfig, distill
from crl_distill.evaluation import evaluate_artifact
from crl_distill.export import GateError, export, run_gates
from crl_distill.export.trace import trace_policy
from crl_distill.runtime import OnnxPolicy, PolicyError, PolicyInputError, read_metadata


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A student trained for a few steps (the CI end-to-end path: distill -> export)."""
    out = tmp_path_factory.mktemp("students")
    distill(fixed_teacher(), students="2x32", out=out, encoders=True, progress=False,
            config=DistillConfig(iterations=1, num_envs=16, steps_per_iter=25,
                                 sgd_steps_per_iter=50, batch_size=64, eval_episodes=16))
    return out


@pytest.fixture(scope="module")
def exported(student_dir):
    return export(student_dir, out=student_dir / "policy.onnx", episodes=32)


def test_export_passes_gates_and_writes_report(exported):
    r = exported.report
    assert r["passed"] and exported.path.is_file()
    g = r["gates"]
    assert g["checker"]["passed"]
    assert g["numeric"]["observations"] >= 1000
    assert set(g["numeric"]["per_batch"]) == {"1", "2", "7", "64"}
    assert g["numeric"]["max_abs_diff"] <= 1e-5
    assert g["numeric"]["reference_evaluator_max_abs_diff"] <= 1e-5
    cl = g["closed_loop"]
    assert abs(cl["success_episodes_jax"] - cl["success_episodes_onnx"]) <= cl["success_episodes_band"]
    assert cl["action_deviation_max"] <= 1e-5
    on_disk = json.loads(exported.report_path.read_text())
    assert on_disk["gates"]["numeric"]["max_abs_diff"] == g["numeric"]["max_abs_diff"]
    assert exported.critic_path is not None and exported.critic_path.is_file()


def test_metadata_round_trips_and_golden_pairs_reproduce(exported):
    meta = read_metadata(exported.path)
    assert meta["env"] == "pointmaze_u" and meta["state_size"] == 2
    assert meta["goal_indices"] == [0, 1] and meta["action_size"] == 2
    assert meta["action_bounds"] == [-1.0, 1.0] and meta["success_threshold"] == 0.5
    assert meta["control_period"] > 0 and len(meta["params_sha256"]) == 64
    assert meta["student"]["depth"] == 2 and meta["teacher"]["env"] == "pointmaze_u"
    assert meta["gates_skipped"] is False and meta["gates"]["numeric"]["passed"]
    policy = OnnxPolicy(exported.path)
    assert policy.metadata == meta
    for pair in meta["golden"]:
        np.testing.assert_allclose(policy.act(np.array(pair["obs"], np.float32)), pair["action"],
                                   atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_runtime_batch_sizes_match_jax(exported, student_dir, batch):
    policy = OnnxPolicy(exported.path)
    ex = load_artifact(student_dir)
    obs = np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32) * 3
    got = policy.act(obs)
    assert got.shape == (batch, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(ex.policy()(obs)), atol=1e-5)
    np.testing.assert_allclose(policy.act(state=obs[:, :2], goal=obs[:, 2:]), got, atol=1e-6)


def test_runtime_rejects_bad_inputs_with_one_line_errors(exported):
    policy = OnnxPolicy(exported.path)
    bad = [
        (np.zeros(5, np.float32), "shape"),
        (np.zeros((2, 3), np.float32), "shape"),
        (np.zeros((0, 4), np.float32), "shape"),
        (np.zeros((1, 1, 4), np.float32), "shape"),
        (np.array([0.0, np.nan, 0.0, 0.0]), "NaN"),
        (np.array([0.0, np.inf, 0.0, 0.0]), "NaN or inf"),
        (np.array(["a", "b", "c", "d"]), "dtype"),
        (np.zeros(4, np.complex64), "dtype"),
        ("obs", "dtype"),
    ]
    for obs, msg in bad:
        with pytest.raises(PolicyInputError, match=msg) as e:
            policy.act(obs)
        assert "\n" not in str(e.value)
    with pytest.raises(PolicyInputError, match="batch size"):
        policy.act(state=np.zeros((2, 2)), goal=np.zeros((3, 2)))
    with pytest.raises(PolicyInputError, match="both"):
        policy.act(state=np.zeros(2))
    assert issubclass(PolicyInputError, PolicyError) and issubclass(PolicyInputError, ValueError)
    # float64 and integer observations are accepted and converted.
    assert policy.act(np.zeros(4, np.float64)).shape == (2,)
    assert policy.act(np.zeros(4, np.int64)).shape == (2,)


def test_gates_catch_a_corrupted_weight(student_dir):
    ex = load_artifact(student_dir)
    model = trace_policy(ex)
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = onnx.numpy_helper.to_array(biggest).copy()
    w.flat[0] += 0.05
    biggest.CopyFrom(onnx.numpy_helper.from_array(w, biggest.name))
    with pytest.raises(GateError) as e:
        run_gates(model, ex, episodes=16)
    assert e.value.gate == "numeric"


def test_failed_gate_leaves_no_file_and_names_the_gate(student_dir, tmp_path, monkeypatch):
    import crl_distill.export.onnx_export as ox

    real_trace = ox.trace_policy

    def corrupted(ex, *args):
        m = real_trace(ex, *args)
        t = m.graph.initializer[0]
        w = onnx.numpy_helper.to_array(t) * 1.5
        t.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), t.name))
        return m

    monkeypatch.setattr(ox, "trace_policy", corrupted)
    target = tmp_path / "policy.onnx"
    with pytest.raises(GateError, match="numeric"):
        export(student_dir, out=target, episodes=16)
    assert not target.exists()
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["passed"] is False and report["failed_gate"] == "numeric"
    # The CLI turns it into one line and exit code 2.
    res = CliRunner().invoke(app, ["export", "--from", str(student_dir), "--out", str(target),
                                   "--episodes", "16"], standalone_mode=False)
    assert isinstance(res.exception, GateError)
    assert not target.exists()


def test_skip_gates_is_recorded(student_dir, tmp_path):
    res = export(student_dir, out=tmp_path / "p.onnx", skip_gates=True)
    meta = read_metadata(res.path)
    assert meta["gates_skipped"] is True and meta["gates"]["skipped"] is True


def test_export_refuses_bad_sources(tmp_path):
    from crl_distill.errors import CrlDistillError

    with pytest.raises(CrlDistillError, match="no such"):
        export(tmp_path / "missing")
    with pytest.raises(CrlDistillError, match="neither a student"):
        export(tmp_path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CrlDistillError, match="not a crl-distill"):
        export(junk)


def test_runtime_imports_and_acts_without_jax(exported):
    code = (
        "import sys; sys.modules['jax'] = None; sys.modules['flax'] = None\n"
        "import numpy as np\n"
        "from crl_distill.runtime import OnnxPolicy\n"
        f"p = OnnxPolicy({str(exported.path)!r})\n"
        "a = p.act(np.zeros(4, np.float32))\n"
        "assert a.shape == (2,) and np.isfinite(a).all()\n"
        "try:\n    import jax\nexcept ImportError:\n    print('jax blocked, runtime OK')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "runtime OK" in res.stdout
    assert res.stderr.strip() == "", f"runtime was not quiet: {res.stderr[:500]}"


def test_cuda_request_falls_back_quietly(exported):
    p = OnnxPolicy(exported.path, device="cuda")
    assert "CPUExecutionProvider" in p.providers
    if "CUDAExecutionProvider" not in p.providers:
        assert p.fallback_reason
    assert p.act(np.zeros(4)).shape == (2,)


def test_eval_matches_across_artifacts(exported, student_dir):

    a = evaluate_artifact(load_artifact(exported.path), episodes=16)
    b = evaluate_artifact(load_artifact(student_dir / exported.report["source"]), episodes=16)
    assert a["success_any"] == b["success_any"] and a["time_at_goal"] == pytest.approx(
        b["time_at_goal"], abs=1e-6)
    assert jax.numpy.isfinite(a["final_dist"])


def test_deep_teacher_exports_as_a_loop_and_matches(tmp_path):
    """A depth-128 teacher exports through one ONNX Loop; onnxruntime matches JAX."""
    import jax.numpy as jnp

    from crl_distill.teacher.networks import apply_unrolled

    t = fixed_teacher(depth=128, width=32)
    net = t.params["actor"]["params"]["net"]
    from jax2onnx import to_onnx

    model = to_onnx(lambda o: jnp.tanh(apply_unrolled(t.config.actor, net, o, scan=True)[..., :2]),
                    [("batch", 4)], input_names=["obs"], output_names=["action"],
                    normalization_mode="prefer_native")
    assert "Loop" in {n.op_type for n in model.graph.node}
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"obs": obs})[0], np.asarray(t.act(obs)), atol=1e-5)


def test_exported_files_hold_file_names_and_hashes_not_local_paths(student_dir, tmp_path):
    """Issue #14: nothing the export writes names a directory of the exporting machine."""
    import hashlib
    import shutil

    student = student_dir / "student-2x32.npz"
    fmt = "c" if shutil.which("cc") else "onnx"  # the C header carries the same metadata
    res = export(student, out=tmp_path / "p.onnx", skip_gates=True, fmt=fmt)
    meta = read_metadata(res.path)
    assert meta["source"] == student.name
    assert meta["source_sha256"] == hashlib.sha256(student.read_bytes()).hexdigest()
    # The teacher's file (helpers.fixed_teacher: /nonexistent/...) is not here: name only.
    assert meta["teacher_source"] == "epoch-000001.npz" and "teacher_source_sha256" not in meta
    texts = {"metadata": json.dumps(meta), "report": res.report_path.read_text(),
             "critic": json.dumps(read_metadata(res.critic_path))}
    texts.update({p.name: p.read_text() for p in res.c_paths})
    assert fmt == "onnx" or {"p.h", "p.c"} <= set(texts)
    for what, text in texts.items():
        for local in (str(tmp_path), str(student_dir), "/nonexistent"):
            assert local not in text, (what, local)
