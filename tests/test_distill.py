import json

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.distill import DistillConfig, Distiller, distill
from crl_distill.distill.dagger import gaussian_kl, relational_kl
from crl_distill.errors import CrlDistillError
from crl_distill.student import StudentConfig, load_student, parse_students

SMALL = dict(iterations=3, num_envs=16, steps_per_iter=25, sgd_steps_per_iter=150, batch_size=128,
             eval_episodes=32)


@pytest.fixture(scope="module")
def fixed_teacher():
    """A small untrained (random, fixed) teacher: a smooth target a student can fit."""
    return helpers.fixed_teacher()


def run_iterations(teacher, scfg, dcfg):
    d = Distiller(teacher, scfg, dcfg)
    st = jax.jit(d.init)(jax.random.PRNGKey(0))
    collect, train = jax.jit(d.collect), jax.jit(d.train)
    logs = []
    for it in range(dcfg.iterations):
        before = jax.tree_util.tree_map(lambda x: x, st.dataset)
        st, frac = collect(teacher.params, st, jnp.float32(dcfg.beta(it)))
        st, m = train(st)
        logs.append({"frac": float(frac), "size": int(st.dataset.size), "before": before,
                     **{k: float(v) for k, v in m.items()}})
    return d, st, logs


def test_parse_students():
    specs = parse_students("2x64, 4x256")
    assert [s.name for s in specs] == ["2x64", "4x256"] and specs[1].width == 256
    for bad in ("2x", "x64", "2x64,", "two", "0x64", "2x64,2x64"):
        with pytest.raises(CrlDistillError):
            parse_students(bad)


def test_beta_schedule_is_honoured_and_dataset_grows(fixed_teacher):
    dcfg = DistillConfig(**{**SMALL, "iterations": 4, "beta0": 0.8, "beta_decay": 0.5,
                            "sgd_steps_per_iter": 5})
    _, st, logs = run_iterations(fixed_teacher, StudentConfig(2, 32), dcfg)
    n = dcfg.states_per_iter
    for it, log in enumerate(logs):
        beta = 0.8 * 0.5**it
        assert log["frac"] == pytest.approx(beta, abs=4 * np.sqrt(beta * (1 - beta) / n) + 1e-6)
        assert log["size"] == (it + 1) * n
    # Aggregation keeps every earlier row untouched.
    first = logs[1]["before"]
    np.testing.assert_array_equal(np.asarray(st.dataset.obs[:n]), np.asarray(first.obs[:n]))
    assert st.dataset.obs.shape[0] == dcfg.iterations * n
    off = DistillConfig(**{**SMALL, "mode": "offline", "sgd_steps_per_iter": 5})
    assert [off.beta(i) for i in range(3)] == [1.0, 1.0, 1.0]
    _, _, logs = run_iterations(fixed_teacher, StudentConfig(2, 32), off)
    assert all(log["frac"] == 1.0 for log in logs)


@pytest.mark.parametrize("loss", ["action_mse", "pre_tanh_mse", "kl", "embed", "relational"])
def test_each_loss_decreases_on_its_own(fixed_teacher, loss):
    weights = {"w_action": 0.0, "w_embed": 0.0, "w_relational": 0.0}
    action_loss = "mse"
    if loss in ("action_mse", "pre_tanh_mse", "kl"):
        weights["w_action"] = 1.0
        action_loss = {"action_mse": "mse", "pre_tanh_mse": "pre_tanh_mse", "kl": "kl"}[loss]
        key = "loss/action"
    else:
        weights[f"w_{loss}"] = 1.0
        key = f"loss/{loss}"
    dcfg = DistillConfig(**{**SMALL, "iterations": 1, "sgd_steps_per_iter": 200, **weights,
                            "action_loss": action_loss})
    scfg = StudentConfig(2, 64, encoders=True, repr_dim=16)
    _, _, logs = run_iterations(fixed_teacher, scfg, dcfg)
    first, last = logs[0][f"{key}_first"], logs[0][key]
    assert last < 0.5 * first, (key, first, last)


def test_student_fits_a_tiny_fixed_teacher_almost_exactly(fixed_teacher, tmp_path):
    dcfg = DistillConfig(**{**SMALL, "iterations": 3, "num_envs": 64, "steps_per_iter": 50,
                            "sgd_steps_per_iter": 1500, "learning_rate": 3e-3})
    res = distill(fixed_teacher, students="2x128", out=tmp_path / "s", config=dcfg,
                  progress=False)
    row = res.report["students"][0]
    # Held-out squared action error summed over both action dims (actions lie in [-1, 1]).
    assert row["action_mse"] < 1e-3, row["action_mse"]
    # Same seeds: a near-exact student reproduces the teacher's episodes closely.
    teacher_success = res.report["teacher"]["eval/success_any"]
    assert abs(row["eval/success_any"] - teacher_success) <= 0.1


def test_distill_writes_report_and_loadable_students(fixed_teacher, tmp_path):
    out = tmp_path / "students"
    res = distill(fixed_teacher, students="1x16,2x32", out=out, encoders=True,
                  config=DistillConfig(**{**SMALL, "iterations": 2, "sgd_steps_per_iter": 20}),
                  progress=False)
    report = json.loads((out / "distill_report.json").read_text())
    assert [r["name"] for r in report["students"]] == ["1x16", "2x32"]
    for r in report["students"]:
        for k in ("actor_params", "flops_per_action", "eval/success_any", "retention",
                  "action_mse", "embed_cosine", "latency_batch1"):
            assert k in r
        assert r["flops_per_action"] > 0 and r["actor_params"] > 0
    assert (out / "retention.png").stat().st_size > 1000
    s = load_student(res.student_paths["2x32"])
    assert s.config == StudentConfig(2, 32, encoders=True, repr_dim=16) and s.env_name == "pointmaze_u"
    obs = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    np.testing.assert_allclose(s.act(obs), s.policy()(obs), atol=1e-6)
    phi, psi = s.embed(obs[:, :2], s.act(obs), obs[:, 2:])
    assert phi.shape == (5, 16) and psi.shape == (5, 16)  # the teacher's repr_dim


def test_bad_inputs_fail_clearly_and_write_nothing(fixed_teacher, tmp_path):
    out = tmp_path / "never"
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CrlDistillError, match="not a crl-distill"):
        distill(junk, out=out, progress=False)
    with pytest.raises(CrlDistillError, match="no such"):
        distill(tmp_path / "missing", out=out, progress=False)
    with pytest.raises(CrlDistillError, match="env mismatch"):
        distill(fixed_teacher, env="pointmaze_big", out=out, progress=False)
    with pytest.raises(CrlDistillError, match="bad student spec"):
        distill(fixed_teacher, students="2x", out=out, progress=False)
    with pytest.raises(CrlDistillError, match="mode"):
        DistillConfig(mode="online")
    assert not out.exists()


def test_kl_and_relational_terms():
    mu = jnp.array([[0.3, -1.0]])
    ls = jnp.array([[-0.5, 0.2]])
    assert float(gaussian_kl(mu, ls, mu, ls)[0]) == pytest.approx(0.0, abs=1e-6)
    # KL(N(0,1) || N(1,1)) = 0.5 per dimension.
    assert float(gaussian_kl(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)),
                             jnp.zeros((1, 2)))[0]) == pytest.approx(1.0)
    logits = jax.random.normal(jax.random.PRNGKey(0), (6, 6))
    assert float(relational_kl(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(relational_kl(logits, logits + 3.0)) == pytest.approx(0.0, abs=1e-5)  # row shift
    assert float(relational_kl(logits, -logits)) > 0.1


@pytest.mark.parametrize(("field", "bad"), [
    ("mode", "online"), ("label", "oracle"), ("action_loss", "l1"), ("iterations", 0),
    ("num_envs", 0), ("steps_per_iter", -1), ("sgd_steps_per_iter", 0), ("batch_size", 0),
    ("eval_episodes", 0), ("label_samples", 0), ("beta0", 1.5), ("beta_decay", -0.1),
    ("learning_rate", 0.0), ("w_action", -1.0), ("w_embed", float("nan")),
    ("w_relational", -0.5), ("seed", 1.5), ("iterations", 2.5),
])
def test_every_distill_field_is_validated(field, bad):
    with pytest.raises(CrlDistillError, match=field.split("_")[0]):
        DistillConfig(**{field: bad})
