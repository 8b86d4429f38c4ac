"""Acting with the critic: best-of-K selection, critic-guided labels, K-sample teacher export."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.artifacts import load_artifact
from crl_distill.distill import DistillConfig, Distiller
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import evaluate_artifact
from crl_distill.pipeline import labelling_config
from crl_distill.student import StudentConfig
from crl_distill.teacher import configure, train_teacher
from crl_distill.teacher.acting import Acting
from crl_distill.teacher.crl import best_candidate, energy_pairs, selection_noise
from crl_distill.teacher.train import load_teacher

TINY = dict(depth=0, width=32, num_envs=8, unroll_length=10, batch_size=32, updates_per_iter=4,
            iters_per_epoch=2, replay_capacity=60, prefill_steps=20, num_eval_envs=8)


@pytest.fixture(scope="module")
def teacher():
    return helpers.fixed_teacher()


def _obs(n=32, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, 4), minval=0.0, maxval=4.0)


def test_noise_is_fixed_and_keeps_the_mean_action():
    a, b = selection_noise(3, 8, 2), selection_noise(3, 8, 2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8, 2) and np.all(np.asarray(a[0]) == 0) and np.any(np.asarray(a[1:]) != 0)


def test_one_candidate_is_the_deterministic_actor(teacher):
    obs = _obs()
    np.testing.assert_allclose(teacher.policy(Acting(1))(obs), teacher.policy()(obs), atol=0)
    actor, phi, psi = teacher.crl.networks(teacher.params)
    mean, log_std = actor(obs)
    got = best_candidate(mean, log_std, obs[:, :2], obs[:, 2:], selection_noise(0, 1, 2), phi, psi,
                         teacher.config.energy)
    np.testing.assert_allclose(got, teacher.policy()(obs), atol=1e-6)


def test_selection_takes_the_candidate_the_critic_scores_highest(teacher):
    obs, k = _obs(16), 8
    crl, p = teacher.crl, teacher.params
    noise = selection_noise(5, k, 2)
    got = np.asarray(teacher.policy(Acting(k, noise_seed=5))(obs))
    mean, log_std = crl.actor.apply(p["actor"], obs)
    for i in range(len(obs)):
        cand = jnp.tanh(mean[i] + jnp.exp(log_std[i]) * noise)  # [K, A]
        phi, psi = crl.embed(p["critic"], jnp.repeat(obs[i:i + 1, :2], k, 0), cand,
                             jnp.repeat(obs[i:i + 1, 2:], k, 0))
        best = int(jnp.argmax(energy_pairs(phi, psi, teacher.config.energy)))
        np.testing.assert_allclose(got[i], cand[best], atol=1e-6)
    # a policy, not a sampler: the same observation always gets the same action
    f = jax.jit(teacher.policy(Acting(k, noise_seed=5)))
    np.testing.assert_array_equal(f(obs), f(obs))
    # the noise seed is part of the policy: another seed is another policy
    assert not np.allclose(f(obs), teacher.policy(Acting(k, noise_seed=6))(obs))


def test_critic_labels_are_the_critics_choice(teacher):
    dcfg = DistillConfig(label="critic", label_samples=8, iterations=1, num_envs=8,
                         steps_per_iter=5, eval_episodes=4)
    d = Distiller(teacher, StudentConfig(1, 8), dcfg)
    obs = _obs()
    rows = d.label(teacher.params, obs, jnp.zeros((32, 2)))
    want = d.teacher_action(teacher.params, obs)
    np.testing.assert_allclose(jnp.tanh(rows["t_mean"]), want, atol=1e-5)
    assert not np.allclose(want, teacher.policy()(obs))  # the critic changes some labels
    for bad, match in ((dict(label="best"), "label"), (dict(label_samples=0), "label_samples")):
        with pytest.raises(CrlDistillError, match=match):
            DistillConfig(**bad)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny teacher that collects its data acting with the critic (K = 4)."""
    out = tmp_path_factory.mktemp("k") / "run"
    res = train_teacher(configure("pointmaze_u", epochs=1, act_samples=4, **TINY), out,
                        progress=False, logger="none")
    assert np.isfinite(res.metrics[-1]["critic_loss"])
    return out


def test_k_sample_teacher_exports_as_one_graph_and_passes_the_gates(run, tmp_path):
    from crl_distill.export import export
    from crl_distill.runtime import OnnxPolicy, verify

    res = export(run, out=tmp_path / "teacher-k4.onnx", episodes=8, act_samples=4)
    assert res.report["passed"] and res.report["name"].endswith("-k4")
    policy = OnnxPolicy(res.path)
    assert "best of 4" in policy.metadata["acting"]
    assert policy.metadata["teacher_acting"] == Acting(4).to_dict()
    assert verify(res.path)["weights"] == "match"
    # The file acts as the JAX K-sample teacher does, on the same seeds.
    onnx_eval = evaluate_artifact(load_artifact(res.path), episodes=8)
    jax_eval = evaluate_artifact(load_artifact(run, acting=Acting(4)), episodes=8)
    assert onnx_eval["success_any"] == jax_eval["success_any"]
    # a checkpoint file resolves the same way as its run directory
    ckpt = evaluate_artifact(load_artifact(sorted((run / "checkpoints").glob("epoch-*.npz"))[-1],
                                           acting=Acting(4)), episodes=8)
    assert ckpt["time_at_goal"] == jax_eval["time_at_goal"]


def test_every_user_of_a_k_sample_teacher_acts_the_same(run, tmp_path):
    """The labelling teacher, `eval --act-samples K`, the K-sample export and the pipeline's
    comparison are one policy: identical actions on the same observations."""
    from crl_distill.export import export
    from crl_distill.runtime import OnnxPolicy

    k, teacher = 4, load_teacher(run)
    obs = np.asarray(_obs(64, seed=3), np.float32)
    labels = Distiller(teacher, StudentConfig(1, 8), DistillConfig(label="critic", label_samples=k))
    labelling = np.asarray(labels.teacher_action(teacher.params, jnp.asarray(obs)))
    evaluated = np.asarray(load_artifact(run, acting=Acting(k)).policy()(obs))  # the CLI's eval
    chosen = labelling_config(DistillConfig(), Acting(k))  # what the pipeline distils with
    compared = np.asarray(teacher.policy(chosen.acting)(obs))
    piped = np.asarray(Distiller(teacher, StudentConfig(1, 8), chosen).teacher_action(
        teacher.params, jnp.asarray(obs)))
    onnx = OnnxPolicy(export(run, out=tmp_path / "k.onnx", episodes=4, act_samples=k,
                             skip_gates=True).path).session.run(None, {"obs": obs})[0]
    np.testing.assert_array_equal(labelling, evaluated)
    np.testing.assert_array_equal(labelling, compared)
    np.testing.assert_array_equal(labelling, piped)
    np.testing.assert_allclose(onnx, labelling, atol=1e-5)
    assert not np.allclose(labelling, teacher.policy()(obs))  # the critic changed some


def test_act_samples_needs_a_teacher(tmp_path):
    from crl_distill.student import save_student
    from crl_distill.student.model import init_student

    cfg = StudentConfig(1, 8)
    params = init_student(cfg, jax.random.PRNGKey(0), 4, 2, 2, 2)
    from crl_distill.envs import make

    path = save_student(tmp_path / "student-1x8.npz", cfg, params,
                        {"env": "pointmaze_u", "env_facts": make("pointmaze_u").describe()})
    with pytest.raises(CrlDistillError, match="needs a teacher"):
        load_artifact(path, acting=Acting(4))
    with pytest.raises(CrlDistillError, match="act samples"):
        Acting(0)
