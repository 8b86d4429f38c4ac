"""C export of recurrent (GRU / LSTM) students: matches flax's own cells step by step, refuses
NaN without touching the state, resets to zero, and its gate fails loudly."""

import re
import shutil
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.errors import CrlDistillError
from crl_distill.export import c_export

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")

OBS, HIDDEN, ACTION = 5, 12, 3
CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}
META = {"env": "pointmaze_u", "control_period": 0.05, "success_threshold": 0.5,
        "episode_length": 100}


def _student(cell: str, seed: int = 0) -> tuple[dict, dict]:
    """(student_cfg, policy_params): random flax cell + output Dense, every bias made non-zero."""
    k_cell, k_out, k_noise = jax.random.split(jax.random.PRNGKey(seed), 3)
    mod = CELLS[cell](features=HIDDEN)
    carry = mod.initialize_carry(k_cell, (OBS,))
    params = {"cell": mod.init(k_cell, carry, jnp.zeros(OBS))["params"],
              "output": nn.Dense(2 * ACTION).init(k_out, jnp.zeros(HIDDEN))["params"]}
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [np.asarray(x + 0.3 * jax.random.normal(k, x.shape), np.float32)
               for x, k in zip(leaves, keys, strict=True)])
    return {"cell": cell, "width": HIDDEN, "depth": 1}, {"params": params}


def _reference(cell: str, policy_params: dict, sequences: np.ndarray) -> np.ndarray:
    """tanh(mean) [S, T, A] from flax's cells, each sequence from a zero carry."""
    p = policy_params["params"]
    mod = CELLS[cell](features=HIDDEN)

    def one(xs):
        zero = jnp.zeros(HIDDEN)
        carry = (zero, zero) if cell == "lstm" else zero

        def step(c, x):
            c, h = mod.apply({"params": p["cell"]}, c, x)
            out = nn.Dense(2 * ACTION).apply({"params": p["output"]}, h)
            return c, jnp.tanh(out[:ACTION])

        return jax.lax.scan(step, carry, xs)[1]

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(sequences)), np.float32)


@pytest.fixture(scope="module", params=sorted(CELLS))
def exported(request):
    """(cell, cfg, params, header, source) for each cell."""
    cfg, params = _student(request.param)
    header, source = c_export.c_sources(cfg, params, META, "policy")
    return request.param, cfg, params, header, source


def _data(cell, params, seed=1, n_seq=6, length=25, n_golden=7):
    rng = np.random.default_rng(seed)
    seqs = rng.normal(scale=1.5, size=(n_seq, length, OBS)).astype(np.float32)
    gold_obs = rng.normal(scale=1.5, size=(1, n_golden, OBS)).astype(np.float32)
    gold_act = _reference(cell, params, gold_obs)[0]
    golden = [{"obs": o.tolist(), "action": a.tolist()} for o, a in
              zip(gold_obs[0], gold_act, strict=True)]
    return seqs, _reference(cell, params, seqs), golden


def test_c_matches_flax_cells_step_by_step(exported):
    cell, _, params, header, source = exported
    seqs, want, golden = _data(cell, params)
    res = c_export.c_gates_recurrent(header, source, seqs, want, golden)
    assert res["passed"] and res["warnings"] == 0 and res["max_abs_diff"] <= 1e-5
    assert res["golden"] == 7 and res["observations"] == 6 * 25 + 7
    assert res["sequences"] == 6 and res["sequence_length"] == 25
    assert res["flags"] == " ".join(c_export.C_FLAGS)
    # The state matters: a stateless answer (every step from zero) is far from the reference.
    assert np.abs(want[:, 1:] - _reference(cell, params, seqs.reshape(-1, 1, OBS)).reshape(
        want.shape)[:, 1:]).max() > 1e-2


def test_gate_fails_on_a_perturbed_reference(exported):
    cell, _, params, header, source = exported
    seqs, want, golden = _data(cell, params, n_seq=3, length=10)
    assert c_export.c_gates_recurrent(header, source, seqs, want, golden)["passed"]
    bad = want.copy()
    bad[2, 9, 1] += 1e-3
    with pytest.raises(CrlDistillError, match="C differs from the ONNX file"):
        c_export.c_gates_recurrent(header, source, seqs, bad, golden)
    golden[3]["action"][0] += 1e-3
    with pytest.raises(CrlDistillError, match="C differs"):
        c_export.c_gates_recurrent(header, source, seqs, want, golden)


def test_header_api_and_no_mutable_statics(exported):
    cell, _, _, header, source = exported
    assert "typedef struct {\n    float h[POLICY_HIDDEN_SIZE];" in header
    assert ("float c[POLICY_HIDDEN_SIZE];" in header) == (cell == "lstm")
    assert "} policy_state;" in header
    assert "void policy_reset(policy_state *s);" in header
    assert "int policy_act(policy_state *s, const float *obs, float *action);" in header
    for define in (f"OBS_SIZE {OBS}", f"ACTION_SIZE {ACTION}", f"HIDDEN_SIZE {HIDDEN}",
                   "RECURRENT 1", f'CELL "{cell}"', "CONTROL_PERIOD 0.05",
                   "SUCCESS_THRESHOLD 0.5", "EPISODE_LENGTH 100"):
        assert f"#define POLICY_{define}\n" in header
    assert '"env": "pointmaze_u"' in header
    assert "malloc" not in source and "#include <math.h>" in source
    assert not re.search(r"static\s+(?!const\b)[\w\s]*float\s+\w+\s*\[", source)


PROBE = """#include <math.h>
#include <stdio.h>
#include <string.h>
#include "policy.h"

int main(void)
{
    policy_state s, before;
    float *raw = (float *)&s;
    for (size_t i = 0; i < sizeof s / sizeof(float); ++i)
        raw[i] = 1.5f;
    policy_reset(&s);
    for (size_t i = 0; i < sizeof s / sizeof(float); ++i)
        if (raw[i] != 0.0f)
            return printf("reset left %g at %zu\\n", raw[i], i), 1;
    float obs[POLICY_OBS_SIZE], act[POLICY_ACTION_SIZE];
    for (int i = 0; i < POLICY_OBS_SIZE; ++i)
        obs[i] = 0.3f * (float)(i + 1);
    for (int t = 0; t < 3; ++t)
        if (policy_act(&s, obs, act) != 0)
            return printf("finite obs refused\\n"), 1;
    int moved = 0;
    for (size_t i = 0; i < sizeof s / sizeof(float); ++i)
        moved |= raw[i] != 0.0f;
    if (!moved)
        return printf("the state did not change\\n"), 1;
    const float bad[2] = {NAN, -INFINITY};
    for (int k = 0; k < 2; ++k) {
        memcpy(&before, &s, sizeof s);
        obs[POLICY_OBS_SIZE - 1] = bad[k];
        for (int i = 0; i < POLICY_ACTION_SIZE; ++i)
            act[i] = 42.0f;
        if (policy_act(&s, obs, act) != -1)
            return printf("non-finite obs accepted\\n"), 1;
        if (memcmp(&before, &s, sizeof s) != 0)
            return printf("the state changed on a refused step\\n"), 1;
        for (int i = 0; i < POLICY_ACTION_SIZE; ++i)
            if (act[i] != 42.0f)
                return printf("the action changed on a refused step\\n"), 1;
    }
    printf("ok\\n");
    return 0;
}
"""


def test_nan_is_refused_without_touching_state_and_reset_zeroes(exported, tmp_path):
    _, _, _, header, source = exported
    (tmp_path / "policy.h").write_text(header)
    (tmp_path / "policy.c").write_text(source)
    (tmp_path / "probe.c").write_text(PROBE)
    warnings = c_export.compile_c([tmp_path / "policy.c", tmp_path / "probe.c"], tmp_path / "p")
    assert "warning:" not in warnings
    r = subprocess.run([str(tmp_path / "p")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stdout


def test_compile_errors_and_bad_config_are_one_line_errors(exported):
    cell, cfg, params, header, source = exported
    with pytest.raises(CrlDistillError, match="failed to compile"):
        c_export.c_gates_recurrent(header, source.replace("return 0;", "return 0"),
                                   np.zeros((1, 2, OBS), np.float32),
                                   np.zeros((1, 2, ACTION), np.float32), [])
    with pytest.raises(CrlDistillError, match="cell 'rnn' is not supported"):
        c_export.c_sources({**cfg, "cell": "rnn"}, params, META)
    with pytest.raises(CrlDistillError, match="hidden size"):
        c_export.c_sources({**cfg, "width": HIDDEN + 1}, params, META)
    with pytest.raises(CrlDistillError, match="must be"):
        c_export.c_gates_recurrent(header, source, np.zeros((2, OBS), np.float32),
                                   np.zeros((2, ACTION), np.float32), [])


def test_mlp_path_is_unchanged(tmp_path):
    """cell "" (or absent) is the MLP export: same text, the stateless API, a numpy forward."""
    rng = np.random.default_rng(3)
    net = {"dense_0": {"kernel": rng.normal(size=(OBS, 8)), "bias": rng.normal(size=8)},
           "output": {"kernel": rng.normal(size=(8, 2 * ACTION)), "bias": rng.normal(size=2 * ACTION)}}
    net = jax.tree_util.tree_map(lambda x: x.astype(np.float32), net)
    cfg = {"depth": 1, "width": 8, "activation": "relu", "layer_norm": False}
    header, source = c_export.c_sources({**cfg, "cell": ""}, {"params": {"net": net}}, META)
    assert (header, source) == c_export.c_sources(cfg, {"params": {"net": net}}, META)
    assert "int policy_act(const float *obs, float *action);" in header
    assert "_state" not in header and "RECURRENT" not in header
    obs = rng.normal(size=(50, OBS)).astype(np.float32)
    hidden = np.maximum(obs @ net["dense_0"]["kernel"] + net["dense_0"]["bias"], 0)
    want = np.tanh((hidden @ net["output"]["kernel"] + net["output"]["bias"])[:, :ACTION])
    (tmp_path / "policy.h").write_text(header)
    (tmp_path / "policy.c").write_text(source)
    (tmp_path / "h.c").write_text(c_export.HARNESS.replace("PREFIX", "policy").replace("UP", "POLICY"))
    c_export.compile_c([tmp_path / "policy.c", tmp_path / "h.c"], tmp_path / "h")
    obs.tofile(tmp_path / "in.bin")
    subprocess.run([str(tmp_path / "h"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                   check=True)
    got = np.fromfile(tmp_path / "out.bin", np.float32).reshape(50, ACTION)
    assert np.abs(got - want).max() <= 1e-5
