"""Exported files load in engines other than onnxruntime: tract (Rust, on robots), OpenVINO and
onnx's reference evaluator, at a batch fixed to 1 as robots deploy and at a dynamic batch.

The engines are optional (`pip install crl-distill[engines]`); each test skips without its own.
"""

import os
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import onnxruntime as ort
import pytest

from crl_distill.artifacts import student_artifact
from crl_distill.envs import make
from crl_distill.export import export
from crl_distill.export.gates import gate_checker
from crl_distill.export.trace import DEFAULT_OPSET, trace_critic, trace_policy
from crl_distill.student.model import Student, StudentConfig, init_student


def _student(env_name: str = "pointmaze_u",
             cfg: StudentConfig = StudentConfig(depth=2, width=32, encoders=True, repr_dim=16)):
    """A student (default 2x32 with encoders) with fixed random weights, as an artifact (no
    distillation: the traced graph has the shape of a trained one)."""
    env = make(env_name)
    params = init_student(cfg, jax.random.PRNGKey(5), env.observation_size, env.state_size,
                          env.goal_size, env.action_size)
    s = Student(config=cfg, params=params, meta={"env": env_name, "env_facts": env.describe()},
                source=Path("/nonexistent/students/student-2x32.npz"))
    return student_artifact(s)


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_traced_files_carry_no_symbolic_intermediate_shapes():
    """What lets strict engines fix the batch: no intermediate tensor annotated with `batch`
    (tract refused such a file at its first Gemm), while inputs and outputs stay dynamic, and
    the files still pass the export's checker (strict shape inference recomputes the shapes)."""
    art = _student()
    env = art.env
    policy, critic = trace_policy(art), trace_critic(art)
    for model, io in ((policy, {"obs": env.observation_size, "action": env.action_size}),
                      (critic, {"state_action": env.state_size + env.action_size,
                                "goal": env.goal_size, "phi": 16, "psi": 16})):
        g = model.graph
        assert [v.name for v in g.value_info if any(d.dim_param for d in v.type.tensor_type.shape.dim)] == []
        assert {v.name: _dims(v) for v in (*g.input, *g.output)} == {k: ["batch", n] for k, n in io.items()}
        assert gate_checker(model) == {"passed": True}
    assert [(o.domain, o.version) for o in policy.opset_import] == [("", DEFAULT_OPSET)]


@pytest.fixture(scope="module")
def exported_files(tmp_path_factory):
    """The policy and critic files as `export` writes them (gates skipped: the engines below
    are held to onnxruntime directly)."""
    d = tmp_path_factory.mktemp("engines")
    res = export(_student(), out=d / "policy.onnx", skip_gates=True)
    # recurrent students: the state as inputs and outputs, in both layouts
    gru = export(_student(cfg=StudentConfig(1, 16, cell="gru")), out=d / "gru" / "policy.onnx",
                 skip_gates=True)
    lstm = export(_student(cfg=StudentConfig(1, 16, cell="lstm")), out=d / "lstm" / "policy.onnx",
                  skip_gates=True, io_names="rsl_rl")
    return {"policy": res.path, "critic": res.critic_path, "gru": gru.path, "lstm_rsl_rl": lstm.path}


def _tract(path: Path, feeds: dict[str, np.ndarray], fixed: bool) -> list[np.ndarray]:
    tract = pytest.importorskip("tract")
    model = tract.onnx().load(str(path))
    if fixed:  # as tract's deploy examples do: the input fact set to a concrete shape
        for k, x in enumerate(feeds.values()):
            model.set_input_fact(k, f"{','.join(map(str, x.shape))},f32")
    runnable = model.into_model().into_runnable()
    return [t.to_numpy() for t in runnable.run(list(feeds.values()))]


def _openvino(path: Path, feeds: dict[str, np.ndarray], fixed: bool) -> list[np.ndarray]:
    # OpenVINO sends usage telemetry by default, from a process it forks (unsafe beside JAX's
    # threads); its telemetry stays off where CI=true when openvino is first imported.
    with mock.patch.dict(os.environ, {"CI": "true"}):
        ov = pytest.importorskip("openvino")
    core = ov.Core()
    model = core.read_model(str(path))
    if fixed:
        model.reshape({k: list(x.shape) for k, x in feeds.items()})
    # f32 throughout: on CPUs with bf16 units OpenVINO would otherwise compute in bf16
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": 1})
    res = compiled(feeds)
    return [np.asarray(res[compiled.output(k)]) for k in range(len(compiled.outputs))]


def _reference(path: Path, feeds: dict[str, np.ndarray], fixed: bool) -> list[np.ndarray]:
    # onnx's own pure-Python evaluator; it has no input facts to fix, it runs the batch it gets
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(str(path)).run(None, feeds))


ENGINES = {"tract": _tract, "openvino": _openvino, "reference": _reference}


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize(("batch", "fixed"), [(1, True), (7, False)], ids=["fixed1", "dynamic7"])
@pytest.mark.parametrize("file", ["policy", "critic", "gru", "lstm_rsl_rl"])
def test_engines_match_onnxruntime(exported_files, engine, batch, fixed, file):
    path = exported_files[file]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch)
    # every input's shape with its "batch" dim set (a recurrent state: [batch, H] or [1, batch, H])
    feeds = {i.name: (rng.normal(size=[batch if d == "batch" else d for d in i.shape]) * 3
                      ).astype(np.float32) for i in sess.get_inputs()}
    want = sess.run(None, feeds)
    got = ENGINES[engine](path, feeds, fixed)
    assert [g.shape for g in got] == [w.shape for w in want]
    diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    print(f"{engine} {file} batch={batch} fixed={fixed}: max|diff| {diff:.3g}")
    assert diff <= 1e-5
