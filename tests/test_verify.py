"""The deployment contract around an exported file: `verify` on the robot, `inspect`, I/O names
and opset variants that pass the same gates."""

import jax
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from crl_distill.cli import app, main
from crl_distill.envs import make
from crl_distill.errors import CrlDistillError
from crl_distill.export import export
from crl_distill.runtime import OnnxPolicy, PolicyError, read_metadata, verify
from crl_distill.student import StudentConfig, save_student
from crl_distill.student.model import init_student


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A randomly initialised pointmaze student (the contract does not depend on training)."""
    env = make("pointmaze_u")
    cfg = StudentConfig(2, 32)
    params = init_student(cfg, jax.random.PRNGKey(1), env.observation_size, env.state_size,
                          env.goal_size, env.action_size)
    return save_student(tmp_path_factory.mktemp("v") / "student-2x32.npz", cfg, params,
                        {"env": env.name, "env_facts": env.describe()})


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    return export(student, out=tmp_path_factory.mktemp("e") / "policy.onnx", episodes=8).path


def test_verify_passes_on_a_fresh_export_from_the_cli(exported):
    r = verify(exported)
    assert r["golden"] > 0 and r["max_abs_diff"] <= 1e-5 and r["weights"] == "match"
    res = CliRunner().invoke(app, ["verify", str(exported)])
    assert res.exit_code == 0 and "OK" in res.output
    OnnxPolicy(exported, self_test=True)


def _rewrite(src, dst, edit):
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _nudge_first_weight(delta):
    def edit(model):
        t = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        a = numpy_helper.to_array(t).copy()
        a.flat[0] += delta
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    return edit


def test_verify_catches_weights_altered_after_export(exported, tmp_path, capsys):
    # A change too small for the golden pairs is still caught by the weights hash ...
    tiny = _rewrite(exported, tmp_path / "tiny.onnx", _nudge_first_weight(1e-7))
    with pytest.raises(PolicyError, match="weights differ"):
        verify(tiny)
    # ... and a large one by the golden pairs, even at load time on the robot.
    big = _rewrite(exported, tmp_path / "big.onnx", _nudge_first_weight(5.0))
    with pytest.raises(PolicyError, match="self-test failed"):
        OnnxPolicy(big, self_test=True)
    with pytest.raises(SystemExit) as e:
        main(["verify", str(big)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "self-test failed" in err


def test_verify_rejects_missing_or_malformed_golden_pairs(exported, tmp_path):
    def drop_golden(model):
        keep = [p for p in model.metadata_props if p.key != "crl_distill.golden"]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)

    def bad_golden(model):
        for p in model.metadata_props:
            if p.key == "crl_distill.golden":
                p.value = '[{"obs": [1, 2], "action": "x"}]'

    for name, edit, match in (("none", drop_golden, "no golden pairs"),
                              ("bad", bad_golden, "golden pairs")):
        with pytest.raises(PolicyError, match=match):
            verify(_rewrite(exported, tmp_path / f"{name}.onnx", edit))


def test_rsl_rl_names_and_an_older_opset_pass_the_same_gates(student, tmp_path):
    for io_names, opset, out_name in (("rsl_rl", 23, "actions"), ("crl", 17, "action")):
        res = export(student, out=tmp_path / f"{io_names}-{opset}.onnx", episodes=8,
                     io_names=io_names, opset=opset)
        assert res.report["passed"]
        model = onnx.load(str(res.path))
        assert [o.name for o in model.graph.output] == [out_name]
        assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == opset
        meta = read_metadata(res.path)
        assert (meta["io_names"], meta["opset"]) == (io_names, opset)
        assert verify(res.path)["weights"] == "match"
        assert OnnxPolicy(res.path).act(np.zeros(4, np.float32)).shape == (2,)


def test_bad_export_options_are_one_line_errors(student, tmp_path):
    for kwargs, match in (({"io_names": "ros"}, "io names"), ({"opset": 9}, "opset")):
        with pytest.raises(CrlDistillError, match=match):
            export(student, out=tmp_path / "x.onnx", **kwargs)
    assert not (tmp_path / "x.onnx").exists()


def test_inspect_prints_the_interface(exported):
    res = CliRunner().invoke(app, ["inspect", str(exported)])
    assert res.exit_code == 0, res.output
    # Cells wrap at the terminal's width; read the value column back as one text.
    flat = " ".join(res.output.replace("│", " ").split())
    for text in ("pointmaze_u", "obs float32 [batch, 4] -> action float32 [batch, 2]",
                 "control period", "20 Hz", "the env's full observation"):
        assert text in flat, text


def test_interface_names_every_element_in_the_file(exported):
    from crl_distill.envs import REGISTRY

    meta = read_metadata(exported)
    assert meta["observation_names"] == "x,y,goal_x,goal_y"
    assert meta["action_names"] == "velocity_x,velocity_y" and meta["action_scale"] == "1.0,1.0"
    assert [e["source"] for e in meta["interface"]["observation"]] == ["state"] * 2 + ["goal"] * 2
    assert meta["interface"]["observation"][0]["unit"] == "cell"
    for name in REGISTRY:  # every env names exactly its observation and action elements
        env = make(name)
        face = env.interface()
        assert len(face["observation"]) == env.observation_size, name
        assert len(face["action"]) == env.action_size, name
        assert len({e["name"] for e in face["observation"]}) == env.observation_size, name


def test_malformed_contract_metadata_and_unloadable_opsets_are_one_line_errors(exported, tmp_path):
    def set_meta(key, value):
        def edit(model):
            keep = [p for p in model.metadata_props if p.key != f"crl_distill.{key}"]
            del model.metadata_props[:]
            model.metadata_props.extend(keep)
            prop = model.metadata_props.add()
            prop.key, prop.value = f"crl_distill.{key}", value
        return edit

    cases = [("observation_spec", '{"state_indices": [0], "history": 1}', "observation_spec"),
             ("observation_spec", '{"state_indices": [7], "history": 0, "teacher_state_size": 2}',
              "observation_spec"),
             ("obs_range", '{"low": [0, 0], "high": [1, 1]}', "obs_range"),
             ("obs_range", '"wide"', "obs_range")]
    for i, (key, value, match) in enumerate(cases):
        with pytest.raises(CrlDistillError, match=match) as e:
            OnnxPolicy(_rewrite(exported, tmp_path / f"m{i}.onnx", set_meta(key, value)))
        assert "\n" not in str(e.value)

    def future_opset(model):
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 99
    with pytest.raises(CrlDistillError, match="onnxruntime cannot load it"):
        OnnxPolicy(_rewrite(exported, tmp_path / "opset99.onnx", future_opset))
