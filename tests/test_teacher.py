import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs.pointmaze import PointMaze
from crl_distill.errors import CrlDistillError
from crl_distill.teacher.config import NetConfig
from crl_distill.teacher.crl import (
    CRL,
    Replay,
    TeacherConfig,
    contrastive_loss,
    energy_matrix,
    energy_pairs,
    replay_insert,
    sample_hindsight,
    truncated_geometric,
)
from crl_distill.teacher.networks import ResidualMLP, apply_unrolled, param_count
from crl_distill.teacher.train import load_teacher, train_teacher

# Small enough for CI, large enough to learn: ~20 s, success_any ~0.4 vs ~0.1 untrained.
TINY = dict(env="pointmaze_u", actor=NetConfig(4, 128), critic=NetConfig(4, 128), num_envs=32,
            unroll_length=25, batch_size=128, updates_per_iter=25, iters_per_epoch=4, epochs=3,
            replay_capacity=400, prefill_steps=50, num_eval_envs=64, seed=0)


@pytest.mark.parametrize("energy", ["l2", "dot", "cosine"])
@pytest.mark.parametrize("kind", ["forward", "backward", "symmetric"])
def test_aligned_embeddings_beat_shuffled(energy, kind):
    key = jax.random.PRNGKey(0)
    phi = jax.random.normal(key, (32, 16)) * 3
    aligned, _ = contrastive_loss(energy_matrix(phi, phi, energy), kind, 0.1)
    shuffled, _ = contrastive_loss(energy_matrix(phi, phi[::-1], energy), kind, 0.1)
    assert float(aligned) < float(shuffled) - 1.0


def test_contrastive_loss_hand_values():
    logits = jnp.array([[2.0, 0.0], [1.0, 3.0]])
    loss, m = contrastive_loss(logits, "forward", 0.0)
    lse = np.log(np.exp([2.0, 0.0]).sum()), np.log(np.exp([1.0, 3.0]).sum())
    assert float(loss) == pytest.approx(np.mean([lse[0] - 2.0, lse[1] - 3.0]), rel=1e-6)
    loss_pen, _ = contrastive_loss(logits, "forward", 0.1)
    assert float(loss_pen - loss) == pytest.approx(0.1 * np.mean(np.square(lse)), rel=1e-5)
    back, _ = contrastive_loss(logits, "backward", 0.0)
    lse_c = np.log(np.exp([2.0, 1.0]).sum()), np.log(np.exp([0.0, 3.0]).sum())
    assert float(back) == pytest.approx(np.mean([lse_c[0] - 2.0, lse_c[1] - 3.0]), rel=1e-6)
    assert float(m["accuracy"]) == 1.0


@pytest.mark.parametrize("energy", ["l2", "dot", "cosine"])
def test_energy_pairs_is_the_diagonal(energy):
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    phi, psi = jax.random.normal(k1, (8, 5)), jax.random.normal(k2, (8, 5))
    np.testing.assert_allclose(energy_pairs(phi, psi, energy),
                               jnp.diagonal(energy_matrix(phi, psi, energy)), rtol=1e-5, atol=1e-5)
    l2 = energy_matrix(phi, psi, "l2")
    assert float(l2[0, 1]) == pytest.approx(-float(jnp.linalg.norm(phi[0] - psi[1])), rel=1e-5)


@pytest.mark.parametrize("depth,ln,res,act", [(0, True, True, "swish"), (8, True, True, "swish"),
                                              (12, False, True, "relu"), (8, True, False, "swish")])
def test_scan_network_equals_unrolled_reference(depth, ln, res, act):
    cfg = NetConfig(depth=depth, width=16, layer_norm=ln, residual=res, activation=act)
    net = ResidualMLP(cfg, 3)
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 7))
    params = net.init(jax.random.PRNGKey(3), x)
    for scan in (False, True):
        np.testing.assert_allclose(net.apply(params, x),
                                   apply_unrolled(cfg, params["params"], x, scan=scan),
                                   rtol=1e-5, atol=1e-5)
    n = sum(p.size for p in jax.tree_util.tree_leaves(params))
    assert n == param_count(cfg, 7, 3)


@pytest.mark.parametrize("depth", [0, 16, 64])
def test_initial_outputs_stay_small_at_every_depth(depth):
    # Without the depth-scaled head the depth-64 actor starts at pre-tanh std ~2.8 and collapses.
    net = ResidualMLP(NetConfig(depth=depth, width=64), 4)
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (512, 4))
    y = net.apply(net.init(jax.random.PRNGKey(0), x), x)
    assert 0.1 < float(y.std()) < 0.6


def test_bad_architectures_are_refused():
    with pytest.raises(CrlDistillError, match="multiple of 4"):
        NetConfig(depth=6)
    with pytest.raises(CrlDistillError, match="activation"):
        NetConfig(activation="gelu")
    with pytest.raises(CrlDistillError, match="energy"):
        TeacherConfig(energy="manhattan")


def test_truncated_geometric_range_and_shape():
    k = truncated_geometric(jax.random.PRNGKey(0), 0.9, jnp.full((20000,), 5))
    assert int(k.min()) == 1 and int(k.max()) == 5
    p = np.bincount(np.asarray(k), minlength=6)[1:] / 20000
    expected = 0.9 ** np.arange(5) / (0.9 ** np.arange(5)).sum()
    np.testing.assert_allclose(p, expected, atol=0.015)
    # With no truncation in reach the mean approaches the geometric mean 1 / (1 - gamma).
    k = truncated_geometric(jax.random.PRNGKey(1), 0.99, jnp.full((50000,), 100000))
    assert float(k.mean()) == pytest.approx(100.0, rel=0.05)


def test_hindsight_goals_stay_in_the_episode_and_look_forward():
    env = PointMaze("u", episode_length=13)  # odd length so episodes straddle unroll edges
    cfg = TeacherConfig(**{**TINY, "num_envs": 4, "replay_capacity": 64, "unroll_length": 10})
    crl = CRL(cfg, env)
    ts = crl.init_train_state(jax.random.PRNGKey(0))
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 4))
    episode = jnp.zeros(4, jnp.int32)
    replay = Replay.empty(64, 4, env.observation_size, env.action_size)
    key = jax.random.PRNGKey(2)
    for it in range(15):  # 150 steps into a 64-row ring: wraps twice
        key, k_c, k_s = jax.random.split(key, 3)
        state, episode, tr = crl.collect(ts.actor, state, episode, k_c, 10, random_actions=True)
        replay = replay_insert(replay, tr)
        if it < 1:
            continue
        b = sample_hindsight(k_s, replay, 4096, env, gamma=0.9)
        assert bool(jnp.all(b["ep_i"] == b["ep_j"])), "goal taken from another episode"
        assert bool(jnp.all(b["t_j"] > b["t_i"])), "goal not strictly in the future"
        s = env.state_size
        assert b["goal"].shape == (4096, env.goal_size)
    # Goals really are achieved states of the stored trajectories, not the commanded goals.
    stored = np.asarray(replay.obs[..., :2]).reshape(-1, 2)
    g = np.asarray(b["goal"][:50])
    assert all(np.min(np.abs(stored - gi).sum(1)) < 1e-6 for gi in g)
    assert s == 2


def test_replay_ring_overwrites_oldest():
    r = Replay.empty(5, 1, 1, 1)
    from crl_distill.teacher.crl import Transition
    for start in (0, 3, 6):
        n = 3
        tr = Transition(obs=jnp.arange(start, start + n, dtype=jnp.float32).reshape(n, 1, 1),
                        action=jnp.zeros((n, 1, 1)), t=jnp.zeros((n, 1), jnp.int32),
                        episode=jnp.zeros((n, 1), jnp.int32))
        r = replay_insert(r, tr)
    assert int(r.size) == 5 and int(r.insert) == 4
    assert sorted(np.asarray(r.obs).ravel().tolist()) == [4, 5, 6, 7, 8]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    result = train_teacher(TeacherConfig(**TINY), out, progress=False)
    return out, result


def test_run_directory_contents(tiny_run):
    out, result = tiny_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher"]["env"] == "pointmaze_u" and "jax" in cfg["versions"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[1]["env_steps"] > rows[0]["env_steps"] and rows[2]["sgd_steps"] == 300
    for k in ("critic_loss", "actor_loss", "alpha", "eval/success_any", "eval/time_at_goal",
              "eval/final_dist"):
        assert np.isfinite(rows[-1][k])
    timing = [json.loads(x) for x in (out / "timing.jsonl").read_text().splitlines()]
    assert [t["epoch"] for t in timing] == [0, 1, 2] and timing[0]["sps"] > 0
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert len(list((out / "checkpoints").glob("epoch-*.npz"))) == 2  # older ones pruned


def test_best_checkpoint_is_the_best_evaluated_epoch_and_loads(tiny_run):
    from crl_distill.checkpoint import read_meta
    from crl_distill.teacher.train import CHECKPOINT_FORMAT

    out, _ = tiny_run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ranks = [(r["eval/success_any"], r["eval/time_at_goal"]) for r in rows]
    best = out / "checkpoints" / "best.npz"
    assert read_meta(best, CHECKPOINT_FORMAT)["epoch"] == ranks.index(max(ranks)) + 1
    t = load_teacher(best)
    assert t.source == best and t.act(jnp.zeros((1, t.env.observation_size))).shape == (1, 2)
    assert best.stat().st_size < (out / "checkpoints" / "epoch-000003.npz").stat().st_size / 2


def test_loader_gives_a_callable_policy_and_embeddings(tiny_run):
    out, _ = tiny_run
    t = load_teacher(out)
    obs = jnp.zeros((3, t.env.observation_size))
    a = t.act(obs)
    assert a.shape == (3, 2) and bool(jnp.all(jnp.abs(a) <= 1))
    assert t.act(obs[0]).shape == (2,)
    phi, psi = t.embed(obs[:, :2], a, obs[:, 2:])
    assert phi.shape == (3, 64) and psi.shape == (3, 64)  # repr_dim
    np.testing.assert_allclose(t.policy()(obs), a, atol=1e-6)


def test_loader_rejects_foreign_and_corrupt_files(tiny_run, tmp_path):
    out, _ = tiny_run
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CrlDistillError, match="not a crl-distill"):
        load_teacher(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, w=np.zeros(3))
    with pytest.raises(CrlDistillError, match="no header"):
        load_teacher(foreign)
    ckpt = sorted((out / "checkpoints").glob("epoch-*.npz"))[-1]
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CrlDistillError):
        load_teacher(truncated)
    with pytest.raises(CrlDistillError, match="no such"):
        load_teacher(tmp_path / "missing")
    with pytest.raises(CrlDistillError, match="not a teacher run directory"):
        load_teacher(tmp_path)


def _train_killed_after_first_epoch(cfg, out):
    """Train into `out` and stop it by an exception in the epoch hook after epoch 0."""

    class Killed(Exception):
        pass

    def kill(row):
        if row["epoch"] == 0:
            raise Killed

    with pytest.raises(Killed):
        train_teacher(cfg, out, progress=False, on_epoch=kill)


def test_resume_after_kill_continues_and_matches_uninterrupted(tiny_run, tmp_path):
    """Kill after epoch 1 (an exception in the epoch hook), resume: same rows as one run."""
    full_out, full = tiny_run
    out = tmp_path / "killed"

    _train_killed_after_first_epoch(TeacherConfig(**TINY), out)
    assert len(list((out / "checkpoints").glob("epoch-*.npz"))) == 1
    resumed = train_teacher(TeacherConfig(**{**TINY, "epochs": 99}), out, resume=True,
                            progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert resumed.metrics[-1]["sgd_steps"] == full.metrics[-1]["sgd_steps"]
    # Resuming reproduces the uninterrupted run exactly: the checkpoint holds the whole carry.
    assert (out / "metrics.jsonl").read_bytes() == (full_out / "metrics.jsonl").read_bytes()


def test_resume_without_a_stored_buffer_refills_it(tiny_run, tmp_path):
    """Replay never saved: a kill after epoch 1 resumes with fresh envs and a random prefill
    (counted in env_steps); the SGD steps and the epochs before the kill are unchanged. A
    touched save-replay file has the next epoch save the buffer once."""
    full_out, full = tiny_run
    out = tmp_path / "sparse"
    cfg = TeacherConfig(**{**TINY, "replay_checkpoint_every": 0})

    _train_killed_after_first_epoch(cfg, out)
    assert not list((out / "checkpoints").glob("replay-*"))
    (out / "save-replay").touch()
    resumed = train_teacher(cfg, out, resume=True, progress=False)
    prefill = TINY["prefill_steps"] * TINY["num_envs"]
    assert resumed.metrics[0] == full.metrics[0]
    assert [r["sgd_steps"] for r in resumed.metrics] == [r["sgd_steps"] for r in full.metrics]
    assert [r["env_steps"] for r in resumed.metrics[1:]] == [
        r["env_steps"] + prefill for r in full.metrics[1:]]
    assert [p.name for p in (out / "checkpoints").glob("replay-*")] == ["replay-000002-p0of1.npz"]
    assert not (out / "save-replay").exists()


def test_replay_schedule_every_nth_epoch_and_the_last(tmp_path):
    from crl_distill.teacher.run_dir import replay_due

    cfg = TeacherConfig(**{**TINY, "epochs": 7, "replay_checkpoint_every": 3})
    assert [e for e in range(1, 8) if replay_due(cfg, e, tmp_path)] == [3, 6, 7]
    never = TeacherConfig(**{**TINY, "epochs": 7, "replay_checkpoint_every": 0})
    assert [e for e in range(1, 8) if replay_due(never, e, tmp_path)] == []
    (tmp_path / "save-replay").touch()
    assert replay_due(never, 2, tmp_path)


def test_run_complete_compares_the_stored_config(tiny_run, tmp_path):
    from crl_distill.teacher.run_dir import run_complete

    out, _ = tiny_run
    assert run_complete(out, TeacherConfig(**TINY))
    # The replay schedule changes what is saved, not what is trained.
    assert run_complete(out, TeacherConfig(**{**TINY, "replay_checkpoint_every": 5}))
    with pytest.raises(CrlDistillError, match=r"epochs=3 \(requested 4\)"):
        run_complete(out, TeacherConfig(**{**TINY, "epochs": 4}))
    assert not run_complete(tmp_path, TeacherConfig(**TINY))


def test_refuses_to_overwrite_a_run(tiny_run):
    out, _ = tiny_run
    with pytest.raises(CrlDistillError, match="already exists"):
        train_teacher(TeacherConfig(**TINY), out, progress=False)


def test_two_devices_match_one_device():
    """One epoch sharded over 2 host devices gives the 1-device losses (float tolerance)."""
    script = textwrap.dedent(f"""
        import json, jax
        from crl_distill.envs import make
        from crl_distill.teacher.config import NetConfig, TeacherConfig
        from crl_distill.teacher.crl import CRL, carry_shardings, make_mesh
        cfg = TeacherConfig(**{{**{TINY!r}, "actor": NetConfig(4, 64), "critic": NetConfig(4, 64),
                                "iters_per_epoch": 2, "batch_size": 64}})
        env = make(cfg.env)
        out = {{}}
        for n in (1, 2):
            mesh = make_mesh(jax.devices()[:n])
            crl = CRL(cfg, env, mesh)
            key = jax.random.PRNGKey(0)
            sh = carry_shardings(jax.eval_shape(crl.init, key), mesh)
            carry = jax.jit(crl.init, out_shardings=sh)(key)
            carry, m = jax.jit(crl.epoch, out_shardings=(sh, None))(carry)
            out[n] = {{k: float(v) for k, v in m.items()}}
            out[f"shards{{n}}"] = len(carry.env_state.obs.sharding.device_set)
        print(json.dumps(out))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["shards1"] == 1 and out["shards2"] == 2
    for k in ("critic_loss", "actor_loss", "alpha", "accuracy", "entropy"):
        assert out["1"][k] == pytest.approx(out["2"][k], rel=1e-3, abs=1e-4), k


def test_short_training_beats_the_untrained_policy(tiny_run):
    """Fixed seed: eval success after training exceeds the untrained actor's on the same seeds."""
    out, result = tiny_run
    cfg = TeacherConfig(**TINY)
    from crl_distill.envs import make

    crl = CRL(cfg, make(cfg.env))
    untrained = crl.init_train_state(jax.random.PRNGKey(cfg.seed)).actor
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed + 1), cfg.epochs - 1)
    before = jax.jit(crl.evaluate)(untrained, key)
    after = result.metrics[-1]
    assert after["eval/success_any"] > float(before["success_any"]) + 0.1, (before, after)
