"""Recurrent (GRU / LSTM) students: specs, DAgger on sequences, ONNX with explicit state, the
runtime's carried state, golden sequences, the C export through `export`."""

import dataclasses
import json
import shutil

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
import pytest
from typer.testing import CliRunner

from crl_distill.cli import app
from crl_distill.distill import DistillConfig, Distiller, distill
from crl_distill.distill.dagger import student_outputs
from crl_distill.distill.run import settings_identity
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import as_recurrent, run_sequences
from crl_distill.export import export
from crl_distill.runtime import OnnxPolicy, PolicyError, verify
from crl_distill.runtime import run_sequences as onnx_sequences
from crl_distill.student import StudentConfig, load_student, parse_students
from crl_distill.student.model import init_student, make_student, recurrent_policy, unroll

TINY = dict(iterations=2, num_envs=8, steps_per_iter=24, sgd_steps_per_iter=30, batch_size=64,
            bptt=8, eval_episodes=8)


@pytest.fixture(scope="module")
def teacher():
    return helpers.fixed_teacher()


@pytest.fixture(scope="module")
def students(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "students"
    return distill(teacher, students="gru8,lstm8", out=out, config=DistillConfig(**TINY),
                   progress=False, logger="none", time_jax=False)


@pytest.fixture(scope="module")
def exported(students, tmp_path_factory):
    """gru8 with the crl names, lstm8 with rsl_rl's (and its C files)."""
    d = tmp_path_factory.mktemp("rec-onnx")
    gru = export(students.out_dir, out=d / "gru" / "policy.onnx", student="gru8", episodes=8)
    fmt = "c" if shutil.which("cc") else "onnx"
    lstm = export(students.out_dir, out=d / "lstm" / "policy.onnx", student="lstm8", episodes=8,
                  io_names="rsl_rl", fmt=fmt)
    return {"gru": gru, "lstm": lstm}


def test_specs_parse_into_cells_with_their_carry():
    gru, lstm, mlp = parse_students("gru64, lstm32, 2x64", encoders=True)
    assert (gru.name, gru.cell, gru.width, gru.carry_size) == ("gru64", "gru", 64, 64)
    assert (lstm.name, lstm.carry_size, lstm.encoders) == ("lstm32", 64, False)
    assert (mlp.name, mlp.recurrent, mlp.carry_size, mlp.encoders) == ("2x64", False, 0, True)
    for bad in ("gru", "gru0", "rnn64", "lstm-8", "gru8,gru8"):
        with pytest.raises(CrlDistillError):
            parse_students(bad)
    with pytest.raises(CrlDistillError, match="recurrent"):
        StudentConfig(depth=2, width=8, cell="gru")


def test_identity_of_an_mlp_ignores_the_recurrent_settings(teacher):
    """Files distilled before `cell` and `bptt` existed stay reusable; a recurrent student's
    sequence length is part of what it is."""
    mlp, gru = StudentConfig(2, 16), StudentConfig(1, 16, cell="gru")
    a, b = DistillConfig(bptt=8), DistillConfig(bptt=16)
    assert "bptt" not in settings_identity(mlp, a, teacher)["distill"]
    assert "cell" not in settings_identity(mlp, a, teacher)["student"]
    assert settings_identity(mlp, a, teacher) == settings_identity(mlp, b, teacher)
    assert settings_identity(gru, a, teacher) != settings_identity(gru, b, teacher)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unroll_is_the_step_function_with_resets(cell):
    cfg = StudentConfig(1, 8, cell=cell)
    module = make_student(cfg, 2).policy
    params = init_student(cfg, jax.random.PRNGKey(0), 5, 3, 2, 2)["policy"]
    obs = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 5))
    first = jnp.zeros((3, 7), bool).at[:, 0].set(True).at[1, 4].set(True)
    carry0 = jax.random.normal(jax.random.PRNGKey(2), (3, cfg.carry_size))
    mean, _ = unroll(module, params, obs, first, carry0)
    rec = recurrent_policy(module, params)
    # stepping by hand from zero, restarting row 1 at step 4, gives the same actions
    c, acts = rec.initial(3), []
    for t in range(7):
        c = jnp.where(first[:, t, None], 0.0, c)
        c, a = rec.step(c, obs[:, t])
        acts.append(a)
    np.testing.assert_allclose(jnp.tanh(mean), jnp.stack(acts, 1), atol=1e-6)
    # the actions depend on the past: the same last observation after other histories differs
    other = obs.at[:, :-1].multiply(-1.0)
    m2, _ = unroll(module, params, other, first, carry0)
    assert float(jnp.abs(m2[:, -1] - mean[:, -1]).max()) > 1e-3


def test_truncated_bptt_learns_a_memory_an_mlp_cannot():
    """Target: the previous step's first observation. A GRU trained through `student_outputs`
    (the distiller's loss path) fits it; an MLP of the same data cannot do better than chance."""
    key = jax.random.PRNGKey(0)
    obs = jax.random.uniform(key, (64, 12, 3), minval=-1, maxval=1)
    first = jnp.zeros((64, 12)).at[:, 0].set(1.0)
    prev = jnp.concatenate([jnp.zeros((64, 1)), obs[:, :-1, 0]], 1)
    target = jnp.arctanh(jnp.clip(0.8 * prev, -0.99, 0.99))[..., None]
    batch = {"obs": obs, "first": first, "carry": jnp.zeros((64, 12, 16))}

    def fit(cfg):
        params = init_student(cfg, jax.random.PRNGKey(1), 3, 3, 0, 1)
        opt = optax.adam(1e-2)
        state = opt.init(params)

        def loss(p):
            mu, _ = student_outputs(p, batch, cfg, 1)
            return jnp.mean((jnp.tanh(mu.reshape(-1, 1)) - jnp.tanh(target.reshape(-1, 1))) ** 2)

        @jax.jit
        def step(p, s):
            v, g = jax.value_and_grad(loss)(p)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, v

        for _ in range(400):
            params, state, v = step(params, state)
        return float(v)

    gru, mlp = fit(StudentConfig(1, 16, cell="gru")), fit(StudentConfig(2, 16))
    assert gru < 0.01 and mlp > 0.1, (gru, mlp)


def test_dagger_rows_keep_the_carry_and_sequences_stay_in_one_env_and_round(teacher):
    dcfg = DistillConfig(**TINY)
    d = Distiller(teacher, StudentConfig(1, 8, cell="gru"), dcfg)
    st = jax.jit(d.init)(jax.random.PRNGKey(0))
    collect = jax.jit(d.collect)
    for it in range(2):
        st, _ = collect(teacher.params, st, jnp.float32(dcfg.beta(it)))
    ds = st.dataset
    first, carry = np.asarray(ds.first), np.asarray(ds.carry)
    assert first.sum() > 0
    # the reset rule: a first step enters with a zero carry; later steps carry memory
    assert np.abs(carry[first > 0]).max() == 0.0
    assert np.abs(carry[first == 0]).max() > 1e-3
    idx = np.asarray(d.sample_rows(ds, jax.random.PRNGKey(3)))
    assert idx.shape == (dcfg.batch_size // dcfg.bptt, dcfg.bptt)
    n = dcfg.num_envs
    assert (np.diff(idx, axis=1) == n).all()  # consecutive steps of one env
    assert (idx // dcfg.states_per_iter == idx[:, :1] // dcfg.states_per_iter).all()  # one round
    assert idx.max() < int(ds.size)


def test_distilled_recurrent_students_load_and_act_statefully(students):
    rows = {r["name"]: r for r in students.report["students"]}
    assert set(rows) == {"gru8", "lstm8"}
    for name, row in rows.items():
        hist = row["history"]
        assert np.isfinite(row["action_mse"]) and hist[-1]["loss/action"] < hist[0]["loss/action_first"]
        s = load_student(students.student_paths[name])
        assert s.config.recurrent and s.config.name == name
        policy = s.policy()
        obs = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 4))
        acts = run_sequences(policy, obs)
        assert acts.shape == (6, 3, 2) and float(jnp.abs(acts).max()) <= 1.0
        with pytest.raises(CrlDistillError, match="recurrent"):
            s.act(obs[0])


def test_onnx_file_carries_the_state_as_inputs_and_outputs(exported):
    g, lstm = (onnx.load(str(exported[k].path)).graph for k in ("gru", "lstm"))
    assert [i.name for i in g.input] == ["obs", "h_in"] and [o.name for o in g.output] == [
        "action", "h_out"]
    assert [i.name for i in lstm.input] == ["obs", "h_in", "c_in"]
    assert [o.name for o in lstm.output] == ["actions", "h_out", "c_out"]
    dims = [d.dim_value or d.dim_param for d in lstm.input[1].type.tensor_type.shape.dim]
    assert dims == [1, "batch", 8]  # rsl_rl's [num_layers, batch, H]
    meta = OnnxPolicy(exported["lstm"].path).metadata
    rec = meta["recurrent"]
    assert rec["cell"] == "lstm" and rec["state_shape"] == [1, "batch", 8]
    assert "first step" in rec["reset"] and len(meta["golden"]) == 8
    numeric = exported["gru"].report["gates"]["numeric"]
    assert numeric["passed"] and numeric["sequence_length"] > 1 and numeric["sequences"] >= 64


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_onnx_policy_carries_state_per_row_and_reset_clears_it(exported, kind):
    policy = OnnxPolicy(exported[kind].path)
    sess, rec = policy.session, policy.recurrent
    obs = np.random.default_rng(0).normal(size=(5, 3, policy.observation_size)).astype(np.float32)
    want = onnx_sequences(sess, obs, rec)  # [T, rows, A], every row from a zero state
    got = np.stack([policy.act(o) for o in obs])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # memory matters: after four steps the same observation gets another action than fresh
    assert np.abs(got[4] - onnx_sequences(sess, obs[4:5], rec)[0]).max() > 1e-4
    policy.reset()
    np.testing.assert_allclose(policy.act(obs[0]), want[0], atol=1e-6)
    # reset(rows) restarts those rows only
    policy.reset([1])
    step = policy.act(obs[1])
    np.testing.assert_allclose(step[[0, 2]], want[1][[0, 2]], atol=1e-6)
    np.testing.assert_allclose(step[1], onnx_sequences(sess, obs[1:2, 1:2], rec)[0, 0], atol=1e-6)
    # a bad observation is refused before the state moves
    with pytest.raises(PolicyError):
        policy.act(np.full((3, policy.observation_size), np.nan, np.float32))
    np.testing.assert_allclose(policy.act(obs[2])[[0, 2]], want[2][[0, 2]], atol=1e-6)


def test_verify_replays_the_golden_sequence_in_order(exported, tmp_path):
    path = exported["gru"].path
    r = verify(path)
    assert r["golden_sequence"] and r["golden"] == 8 and r["max_abs_diff"] <= 1e-5
    # the same pairs out of order (each step's state comes from the one before) fail
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == "crl_distill.golden":
            pairs = json.loads(p.value)
            p.value = json.dumps(pairs[::-1])
    bad = tmp_path / "reordered.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(PolicyError, match="self-test failed"):
        OnnxPolicy(bad).self_test()


def test_closed_loop_and_c_gates_run_on_sequences(exported):
    gates = exported["lstm"].report["gates"]
    cl = gates["closed_loop"]
    assert cl["passed"] and cl["action_deviation_max"] <= 1e-5
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    c = exported["lstm"].report["c"]
    assert c["passed"] and c["sequences"] >= 64 and c["golden"] == 8 and c["max_abs_diff"] <= 1e-5
    header = (exported["lstm"].path.parent / "policy.h").read_text()
    assert "policy_state" in header and "void policy_reset(policy_state *s);" in header


def test_a_recurrent_student_refuses_encoders_and_mlps_keep_theirs(teacher, tmp_path):
    res = distill(teacher, students="gru4,1x8", out=tmp_path / "s", encoders=True,
                  config=DistillConfig(**{**TINY, "iterations": 1, "sgd_steps_per_iter": 2,
                                          "eval_episodes": 2}),
                  progress=False, logger="none", time_jax=False)
    cfgs = {r["name"]: r["student"] for r in res.report["students"]}
    assert cfgs["gru4"]["encoders"] is False and cfgs["1x8"]["encoders"] is True
    mlp = load_student(res.student_paths["1x8"])
    assert dataclasses.asdict(mlp.config)["cell"] == ""
    assert as_recurrent(mlp.policy()).carry_size == 0


def test_inspect_and_verify_name_the_state_and_the_reset_rule(exported):
    path = str(exported["lstm"].path)
    res = CliRunner().invoke(app, ["inspect", path])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.replace("│", " ").split())
    for text in ("LSTM of 8 units: h_in, c_in -> h_out, c_out, each float32 [1, batch, 8]",
                 "zero every state input at an episode's first step", "io names rsl_rl"):
        assert text in flat, text
    res = CliRunner().invoke(app, ["verify", path])
    assert res.exit_code == 0 and "a golden sequence of 8 steps" in " ".join(res.output.split())


def test_a_state_layout_that_does_not_match_the_graph_is_refused_in_one_line(exported, tmp_path):
    """A GRU file whose metadata claims an LSTM's state (the mix-up deploy code makes when it
    guesses the cell) is refused at load, as is malformed recurrent metadata."""
    def edited(value):
        model = onnx.load(str(exported["gru"].path))
        for p in model.metadata_props:
            if p.key == "crl_distill.recurrent":
                p.value = json.dumps(value)
        path = tmp_path / f"edited-{len(list(tmp_path.iterdir()))}.onnx"
        onnx.save(model, str(path))
        return path

    rec = OnnxPolicy(exported["gru"].path).recurrent
    lstm_claim = {**rec, "cell": "lstm", "state_inputs": ["h_in", "c_in"],
                  "state_outputs": ["h_out", "c_out"]}
    with pytest.raises(CrlDistillError, match=r"expected the inputs \['obs', 'h_in', 'c_in'\]"):
        OnnxPolicy(edited(lstm_claim))
    for bad in ("gru", {**rec, "state_shape": [2, "batch", 8]}, {**rec, "state_outputs": []}):
        with pytest.raises(CrlDistillError, match="malformed recurrent metadata"):
            OnnxPolicy(edited(bad))


def test_the_success_band_of_two_runs_of_one_policy():
    """Equal counts always pass; a chaotic simulator's 4 vs 6 of 16 (measured on the ant) lies in
    the band, 0 vs 16 never does; a smooth run keeps the one-episode rule."""
    from crl_distill.export.gates import success_band

    assert success_band(0, 0, 128) == 1 and success_band(128, 128, 128) == 1
    assert abs(4 - 6) <= success_band(4, 6, 16)
    assert abs(0 - 16) > success_band(0, 16, 16)
    assert success_band(60, 68, 128) < 20


def test_the_closed_loop_gate_checks_the_actions_on_the_files_own_states(students):
    """A file off by a little in one weight can still reach as many goals; the gate holds it to
    JAX's actions on every state it visited."""
    from crl_distill.artifacts import load_artifact
    from crl_distill.export.gates import GateError, gate_closed_loop
    from crl_distill.export.trace import recurrent_io, trace_policy

    art = load_artifact(students.out_dir, "gru8")
    policy = art.policy(traceable=True)
    model = trace_policy(art, policy=policy)
    assert gate_closed_loop(model, art.env, policy, 4, 0, recurrent_io(art))["passed"]
    t = max(model.graph.initializer, key=lambda x: np.prod(x.dims))
    w = onnx.numpy_helper.to_array(t).copy()
    w.flat[0] += 1e-3
    t.CopyFrom(onnx.numpy_helper.from_array(w, t.name))
    with pytest.raises(GateError, match="on the states the ONNX file visited"):
        gate_closed_loop(model, art.env, policy, 4, 0, recurrent_io(art))
