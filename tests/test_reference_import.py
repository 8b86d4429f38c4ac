"""Reference-layout trees built here (own code mirroring the documented layouts, random
weights), pickled the way the reference code saves them, imported and compared."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

from crl_distill.errors import CrlDistillError
from crl_distill.teacher import load_teacher
from crl_distill.teacher.reference_import import import_reference, safe_load_pickle

STATE, GOAL, ACTION, WIDTH, REPR = 2, 2, 2, 16, 8  # pointmaze_u: obs 4, action 2


def dense(rng, n_in, n_out):
    return {"kernel": jnp.asarray(rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(n_out,)) * 0.1, jnp.float32)}


def ref_tree(rng, n_in, n_hidden, heads, layer_norm):
    p = {}
    for i in range(n_hidden):
        p[f"Dense_{i}"] = dense(rng, n_in if i == 0 else WIDTH, WIDTH)
        if layer_norm:
            p[f"LayerNorm_{i}"] = {
                "scale": jnp.asarray(1 + 0.1 * rng.normal(size=WIDTH), jnp.float32),
                "bias": jnp.asarray(0.1 * rng.normal(size=WIDTH), jnp.float32)}
    for j, n_out in enumerate(heads):
        p[f"Dense_{n_hidden + j}"] = dense(rng, WIDTH, n_out)
    return FrozenDict({"params": p})


def ref_forward(tree, x, n_hidden, n_heads, layer_norm, skip):
    """The documented reference semantics, written independently of crl-distill's networks."""
    p = tree["params"]
    for i in range(n_hidden):
        x = x @ np.asarray(p[f"Dense_{i}"]["kernel"]) + np.asarray(p[f"Dense_{i}"]["bias"])
        if layer_norm:
            mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
            x = (x - mu) / np.sqrt(var + 1e-6) * np.asarray(p[f"LayerNorm_{i}"]["scale"]) \
                + np.asarray(p[f"LayerNorm_{i}"]["bias"])
        x = x / (1 + np.exp(-x))  # swish
        if skip:
            if i == 0:
                saved = x
            elif i % skip == 0:
                x = x + saved
                saved = x
    return [x @ np.asarray(p[f"Dense_{n_hidden + j}"]["kernel"])
            + np.asarray(p[f"Dense_{n_hidden + j}"]["bias"]) for j in range(n_heads)]


def write_reference_pickle(path, n_hidden, layer_norm, seed=0, dims=(STATE, GOAL, ACTION)):
    state, goal, action = dims
    rng = np.random.default_rng(seed)
    actor = ref_tree(rng, state + goal, n_hidden, [action, action], layer_norm)
    critic = {"sa_encoder": ref_tree(rng, state + action, n_hidden, [REPR], layer_norm),
              "g_encoder": ref_tree(rng, goal, n_hidden, [REPR], layer_norm)}
    alpha = {"log_alpha": jnp.asarray(-1.5, jnp.float32)}
    path.write_bytes(pickle.dumps((alpha, actor, critic)))
    return actor, critic


CASES = [  # (format given, hidden layers, layer norm, skip used by the reference)
    ("scaling-crl", 9, True, 4),     # input layer + 2 residual blocks of 4
    ("auto", 9, True, 4),            # detected as scaling-crl
    ("jaxgcrl", 3, False, 0),        # plain MLP, no LayerNorm
    ("jaxgcrl", 2, False, 4),        # JaxGCRL defaults: n_hidden 2, skip 4 (never triggers)
    ("jaxgcrl", 7, True, 2),         # JaxGCRL with a skip every 2 layers
]


@pytest.mark.parametrize("fmt,n_hidden,ln,skip", CASES)
def test_import_gives_the_same_actions_and_embeddings(tmp_path, fmt, n_hidden, ln, skip):
    pkl = tmp_path / "ref.pkl"
    actor, critic = write_reference_pickle(pkl, n_hidden, ln)
    run = import_reference(pkl, "pointmaze_u", tmp_path / "run", fmt=fmt,
                           skip_connections=skip if fmt == "jaxgcrl" else 0)
    t = load_teacher(run)
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(32, STATE + GOAL)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(32, ACTION)).astype(np.float32)
    mean, log_std = ref_forward(actor, obs, n_hidden, 2, ln, skip)
    np.testing.assert_allclose(np.asarray(t.act(obs)), np.tanh(mean), atol=1e-5)
    our_mean, our_log_std = t.crl.actor.apply(t.params["actor"], jnp.asarray(obs))
    np.testing.assert_allclose(our_mean, mean, atol=1e-5)
    np.testing.assert_allclose(our_log_std, -5 + 3.5 * (np.tanh(log_std) + 1), atol=1e-5)
    phi, psi = t.embed(obs[:, :STATE], act, obs[:, STATE:])
    (phi_ref,) = ref_forward(critic["sa_encoder"], np.concatenate([obs[:, :STATE], act], 1),
                             n_hidden, 1, ln, skip)
    (psi_ref,) = ref_forward(critic["g_encoder"], obs[:, STATE:], n_hidden, 1, ln, skip)
    np.testing.assert_allclose(phi, phi_ref, atol=1e-5)
    np.testing.assert_allclose(psi, psi_ref, atol=1e-5)
    assert t.config.actor.depth == n_hidden - 1 and t.config.repr_dim == REPR


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/crl_distill_pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = "/tmp/crl_distill_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps(({"log_alpha": 0.0}, _Evil(), {})))
    with pytest.raises(CrlDistillError, match=r"refusing to unpickle (posix|os)\.system"):
        safe_load_pickle(pkl)
    with pytest.raises(CrlDistillError, match="refusing to unpickle"):
        import_reference(pkl, "pointmaze_u", tmp_path / "run")
    assert not os.path.exists(marker)
    assert not (tmp_path / "run").exists()


def test_mismatched_env_and_foreign_trees_fail_clearly(tmp_path):
    pkl = tmp_path / "ref.pkl"
    write_reference_pickle(pkl, 5, True)
    with pytest.raises(CrlDistillError, match="env mismatch: .*actor input has size 4"):
        import_reference(pkl, "ant_u_maze", tmp_path / "r1")
    weird = tmp_path / "weird.pkl"
    weird.write_bytes(pickle.dumps(({}, {"params": {"Conv_0": {}}},
                                    {"sa_encoder": {}, "g_encoder": {}})))
    with pytest.raises(CrlDistillError, match="unexpected layers"):
        import_reference(weird, "pointmaze_u", tmp_path / "r2")
    plain = tmp_path / "plain.pkl"
    write_reference_pickle(plain, 3, False)  # no LayerNorm: cannot be a scaling-crl network
    with pytest.raises(CrlDistillError, match="not a scaling-crl network"):
        import_reference(plain, "pointmaze_u", tmp_path / "r3", fmt="scaling-crl")
    six = tmp_path / "six.pkl"
    write_reference_pickle(six, 6, False)  # skips after layers 3 only; layers 4-5 trail
    with pytest.raises(CrlDistillError, match="trailing layers"):
        import_reference(six, "pointmaze_u", tmp_path / "r4", fmt="jaxgcrl", skip_connections=3)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CrlDistillError, match="not a readable pickle"):
        import_reference(junk, "pointmaze_u", tmp_path / "r5")


def test_paper_robot_checkpoints_import_and_humanoid_ones_are_refused_with_the_reason(tmp_path):
    # The paper's ant maze state (29, goal x-y, 8 actions) is ours: it imports.
    ant = tmp_path / "ant.pkl"
    write_reference_pickle(ant, 5, True, dims=(29, 2, 8))
    run = import_reference(ant, "ant_big_maze", tmp_path / "ant_run")
    assert load_teacher(run).env.name == "ant_big_maze"
    # The paper's humanoid state is 268-dim and carries the target: refused, naming why.
    hum = tmp_path / "humanoid.pkl"
    write_reference_pickle(hum, 5, True, dims=(268, 3, 17))
    for env in ("humanoid", "humanoid_u_maze"):
        with pytest.raises(CrlDistillError, match="268-dim state, which carries the commanded target"):
            import_reference(hum, env, tmp_path / env)
        assert not (tmp_path / env).exists()


def test_student_from_pkl_on_the_fly(tmp_path):
    from crl_distill.distill import DistillConfig, distill

    pkl = tmp_path / "ref.pkl"
    write_reference_pickle(pkl, 5, True)
    with pytest.raises(CrlDistillError, match="needs --env"):
        distill(pkl, progress=False)
    res = distill(pkl, env="pointmaze_u", students="1x16", progress=False,
                  config=DistillConfig(iterations=1, num_envs=8, steps_per_iter=10,
                                       sgd_steps_per_iter=5, eval_episodes=8))
    assert res.out_dir == tmp_path / "ref-students" and (res.out_dir / "student-1x16.npz").exists()
    assert jax.device_count() >= 1
