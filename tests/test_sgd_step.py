"""The SGD step's faster pieces against the formulas they replace: the L2 energy matrix from one
matmul (against the [B, B, D] differences) and the LayerNorm with a hand-written backward
(against flax's), values and gradients, including coincident phi_i == psi_j."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs import make
from crl_distill.teacher.config import NetConfig, TeacherConfig
from crl_distill.teacher.crl import CRL, contrastive_loss, energy_matrix, energy_pairs
from crl_distill.teacher.networks import LayerNorm, apply_unrolled


def l2_direct(phi, psi):
    """The former energy matrix: through phi_i - psi_j, [B, B', D]."""
    return -jnp.sqrt(jnp.sum((phi[:, None, :] - psi[None, :, :]) ** 2, -1) + 1e-12)


def embeddings(b=48, d=16, scale=3.0, offset=2.0, coincident=True):
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    phi = jax.random.normal(k1, (b, d)) * scale + offset
    psi = jax.random.normal(k2, (b, d)) * scale + offset
    if coincident:
        # on the diagonal (a positive), off it (a negative), and a near miss (distance 4e-4)
        psi = psi.at[0].set(phi[0]).at[5].set(phi[3]).at[9].set(phi[9] + 1e-4)
    return phi, psi


NEAR = ((0, 0), (3, 5), (9, 9))


def rel_close(a, b, tol):
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_less(np.abs(a - b), tol * (np.abs(b).max() + 1e-30))


@pytest.mark.parametrize("cols", [48, 20])
def test_l2_matrix_equals_the_direct_formula(cols):
    phi, psi = embeddings()
    new, old = np.asarray(energy_matrix(phi, psi[:cols], "l2")), np.asarray(l2_direct(phi, psi[:cols]))
    near = np.zeros(new.shape, bool)
    for i, j in NEAR:
        near[i, j] = j < cols
    np.testing.assert_allclose(new[~near], old[~near], rtol=2e-6, atol=1e-5)
    # nearly coincident pairs read as a distance at the expansion's rounding (~0.015 at norms ~14)
    np.testing.assert_allclose(new[near], old[near], atol=0.05)
    assert np.all(new[near] < 0)
    np.testing.assert_allclose(jnp.diagonal(new), energy_pairs(phi, psi, "l2")[:min(cols, 48)],
                               rtol=2e-6, atol=0.05)


@pytest.mark.parametrize("coincident", [False, True])
@pytest.mark.parametrize("kind", ["forward", "backward", "symmetric"])
def test_critic_loss_and_gradient_equal_the_direct_formula(kind, coincident):
    """To float tolerance; coincident pairs (phi_0 == psi_0, phi_3 == psi_5) move their logits by
    the expansion's rounding (~0.015 here), so their rows' losses and gradients move by about as
    much, and stay finite."""
    phi, psi = embeddings(coincident=coincident)
    tol = 2e-2 if coincident else 1e-4

    def loss(energy):
        return lambda p, q: contrastive_loss(energy(p, q), kind, 0.1)[0]

    new, g_new = jax.value_and_grad(loss(lambda p, q: energy_matrix(p, q, "l2")), (0, 1))(phi, psi)
    old, g_old = jax.value_and_grad(loss(l2_direct), (0, 1))(phi, psi)
    assert float(new) == pytest.approx(float(old), rel=tol / 50, abs=1e-6)
    for a, b in zip(g_new, g_old, strict=True):
        rel_close(a, b, tol)


def test_gradient_finite_when_all_embeddings_coincide():
    phi = jnp.ones((8, 4))
    g = jax.grad(lambda p, q: contrastive_loss(energy_matrix(p, q, "l2"), "symmetric", 0.1)[0],
                 (0, 1))(phi, phi)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_layer_norm_equals_flax(dtype):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(3), 4)
    x = (jax.random.normal(k1, (16, 32)) * 2 + 1).astype(dtype)
    params = {"scale": 1 + 0.1 * jax.random.normal(k2, (32,)), "bias": jax.random.normal(k3, (32,))}
    dy = jax.random.normal(k4, (16, 32))
    ours, ref = LayerNorm(dtype=jnp.dtype(dtype)), nn.LayerNorm(dtype=jnp.dtype(dtype),
                                                                 param_dtype=jnp.float32)
    assert jax.tree_util.tree_structure(ours.init(k1, x)) == jax.tree_util.tree_structure(
        ref.init(k1, x))

    def f(m):
        return lambda p, x: jnp.sum(m.apply({"params": p}, x).astype(jnp.float32) * dy)

    y, y_ref = ours.apply({"params": params}, x), ref.apply({"params": params}, x)
    assert y.dtype == y_ref.dtype
    tol = 1e-5 if dtype == "float32" else 2e-2
    rel_close(y.astype(jnp.float32), y_ref.astype(jnp.float32), tol)
    g, g_ref = jax.grad(f(ours), (0, 1))(params, x), jax.grad(f(ref), (0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref), strict=True):
        assert a.dtype == b.dtype
        rel_close(a.astype(jnp.float32), b.astype(jnp.float32), tol)


def test_critic_loss_gradient_equals_the_former_step():
    """CRL.critic_loss (matmul energy, our LayerNorm, nn.scan) against the former formula built
    from flax's LayerNorm (`apply_unrolled`) and the direct energy, on the same parameters."""
    net = NetConfig(depth=4, width=32)
    cfg = TeacherConfig(actor=net, critic=net, repr_dim=8, batch_size=24)
    env = make("pointmaze_u")
    crl = CRL(cfg, env)
    ts = crl.init_train_state(jax.random.PRNGKey(0))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = {"state": jax.random.normal(k1, (24, env.state_size)),
             "action": jax.random.uniform(k2, (24, env.action_size), minval=-1, maxval=1),
             "goal": jax.random.normal(k3, (24, env.goal_size))}
    batch["goal"] = batch["goal"].at[2].set(batch["state"][2, :env.goal_size])

    def former(critic, b):
        phi = apply_unrolled(net, critic["phi"]["params"], jnp.concatenate([b["state"], b["action"]], -1))
        psi = apply_unrolled(net, critic["psi"]["params"], b["goal"])
        return contrastive_loss(l2_direct(phi, psi), cfg.contrastive_loss, cfg.logsumexp_penalty)[0]

    new, g_new = jax.value_and_grad(lambda c, b: crl.critic_loss(c, b)[0])(ts.critic, batch)
    old, g_old = jax.value_and_grad(former)(ts.critic, batch)
    assert float(new) == pytest.approx(float(old), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_new), jax.tree_util.tree_leaves(g_old), strict=True):
        rel_close(a, b, 1e-4)
