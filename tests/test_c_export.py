"""Dependency-free C export: compiles warning-free, matches the ONNX file, fails loudly."""

import re
import subprocess

import helpers
import numpy as np
import pytest

from crl_distill.distill import DistillConfig, distill
from crl_distill.errors import CrlDistillError
from crl_distill.export import c_export, export
from crl_distill.export.gates import ort_session
from crl_distill.student import parse_students

SMALL = DistillConfig(iterations=2, num_envs=16, steps_per_iter=25, sgd_steps_per_iter=40,
                      batch_size=64, eval_episodes=16)


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    """A relu student, and a swish + LayerNorm one (every C code path)."""
    specs = (parse_students("1x16") + parse_students("2x24", activation="swish", layer_norm=True))
    return distill(helpers.fixed_teacher(), students=specs, config=SMALL, progress=False,
                   out=tmp_path_factory.mktemp("c") / "students")


@pytest.mark.parametrize("name", ["1x16", "2x24"])
def test_c_export_compiles_cleanly_and_matches_onnx(students, tmp_path, name):
    res = export(students.student_paths[name], out=tmp_path / f"policy-{name}.onnx", episodes=8,
                 fmt="c")
    c = res.report["c"]
    assert c["passed"] and c["warnings"] == 0 and c["observations"] >= 1000 and c["golden"] > 0
    assert c["max_abs_diff"] <= 1e-5
    header, source = (p.read_text() for p in res.c_paths[:2])
    prefix = c_export.c_prefix(f"policy-{name}")
    assert f"int {prefix}_act(const float *obs, float *action);" in header
    assert "malloc" not in source and "#include <math.h>" in source
    assert '"env": "pointmaze_u"' in header  # the metadata travels as a comment block
    assert re.search(rf"#define {prefix.upper()}_OBS_SIZE 4\b", header)


def _run_harness(tmp_path, header, source, rows):
    (tmp_path / "policy.h").write_text(header)
    (tmp_path / "policy.c").write_text(source)
    (tmp_path / "harness.c").write_text(c_export.HARNESS.replace("PREFIX", "policy")
                                        .replace("UP", "POLICY"))
    c_export.compile_c([tmp_path / "policy.c", tmp_path / "harness.c"], tmp_path / "h")
    np.asarray(rows, np.float32).tofile(tmp_path / "in.bin")
    subprocess.run([str(tmp_path / "h"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                   check=True)
    return np.fromfile(tmp_path / "out.bin", np.float32).reshape(len(rows), -1)


def test_nan_input_is_refused_without_touching_the_action(students, tmp_path):
    res = export(students.student_paths["1x16"], out=tmp_path / "policy.onnx", skip_gates=True,
                 fmt="c")
    header, source = (p.read_text() for p in res.c_paths[:2])
    out = _run_harness(tmp_path, header, source, [[0.1, 0.2, 1.0, 2.0], [np.nan, 0.2, 1.0, 2.0],
                                                  [0.1, np.inf, 1.0, 2.0]])
    assert np.all(np.abs(out[0]) <= 1.0)
    assert np.all(out[1:] == 99.0)  # the harness's marker for "policy_act returned -1"


def test_gate_catches_an_altered_weight(students, tmp_path):
    res = export(students.student_paths["1x16"], out=tmp_path / "policy.onnx", episodes=8, fmt="c")
    header, source = (p.read_text() for p in res.c_paths[:2])
    # Change the first weight literal of the first layer.
    altered = re.sub(r"(W0\[\d+\] = \{\s*)(-?[\d.e+-]+)f", lambda m: f"{m[1]}{float(m[2]) + 0.05!r}f",
                     source, count=1)
    assert altered != source
    obs = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    with pytest.raises(CrlDistillError, match="C differs from the ONNX file"):
        c_export.c_gates(header, altered, ort_session(res.path.read_bytes()), obs, [])


def test_missing_compiler_and_teacher_source_are_one_line_errors(students, tmp_path):
    target = tmp_path / "p.onnx"
    with pytest.raises(CrlDistillError, match="'no-such-cc' was not found"):
        export(students.student_paths["1x16"], out=target, fmt="c", cc="no-such-cc")
    with pytest.raises(CrlDistillError, match="format"):
        export(students.student_paths["1x16"], out=target, fmt="tflite")
    assert not target.exists()
    assert not list(tmp_path.glob("*.c"))
