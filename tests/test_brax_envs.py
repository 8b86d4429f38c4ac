"""Brax environments: static sizes, jit/vmap shapes, determinism, goal metrics, maze walls.

Compiling brax physics on CPU is the expensive part (seconds per function), so every compiled
function is built once per module (`_compiled`) for N=2 environments and shared by the tests,
and compiled with XLA's backend optimisation off, which roughly halves compile time for these
short runs.
"""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs import REGISTRY, brax_envs, make
from crl_distill.envs.mazes import PAPER_LAYOUTS, marked_cells, wall_grid

BRAX = list(brax_envs.NAMES)
N = 2
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_CACHE: dict[str, SimpleNamespace] = {}


def _compiled(name: str) -> SimpleNamespace:
    """env plus jitted, vmapped reset / step / state_at, shared across tests."""
    if name not in _CACHE:
        env = make(name)

        def jit(f):
            return jax.jit(jax.vmap(f), compiler_options=_FAST_COMPILE)

        _CACHE[name] = SimpleNamespace(
            env=env, reset=jit(env.reset), step=jit(env.step), state_at=jit(env.state_at)
        )
    return _CACHE[name]


def _keys(seed: int) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(seed), N)


# -- static facts ----------------------------------------------------------------------------


def test_every_brax_env_is_registered_and_listing_builds_no_physics():
    assert set(BRAX) <= set(REGISTRY)
    for name in BRAX:
        env = make(name)
        info = env.describe()
        assert info["name"] == name
        assert "sys" not in vars(env)  # nothing built
        assert isinstance(env.state_size, int) and isinstance(env.action_size, int)
        assert isinstance(env.goal_indices, tuple) and all(type(i) is int for i in env.goal_indices)
        assert isinstance(env.control_period, float) and isinstance(env.backend, str)
        assert env.layout and "\n" not in env.layout
        assert env.episode_length == 1000


def test_listing_is_fast_and_quiet_and_brax_import_is_quiet():
    """In a fresh interpreter: listing imports no brax; building physics prints no Warp notice."""
    code = textwrap.dedent(
        """
        import sys, time
        from crl_distill.envs import make, names
        t = time.perf_counter()
        infos = [make(n).describe() for n in names()]
        listed = time.perf_counter() - t
        assert "brax" not in sys.modules and "mujoco" not in sys.modules, "listing imported brax"
        make("reacher").sys
        assert "mujoco.mjx" in sys.modules
        print("LISTED", listed)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("LISTED"), out.stdout
    assert float(lines[0].split()[1]) < 1.0  # `crl-distill envs` lists in well under a second
    assert "warp" not in out.stderr.lower() and "not actively being" not in out.stderr


@pytest.mark.parametrize("name", BRAX)
def test_static_sizes_match_the_loaded_model(name):
    env = make(name)
    model = env.sys
    q, qd, links = model.q_size(), model.qd_size(), model.num_links()
    if name == "reacher":
        assert (q, qd) == (4, 4)  # two arm hinges + the target's two slide joints
        expected = 2 + 2 + 3 + 3
    elif name.startswith("humanoid"):
        expected = q + qd + 10 * links + 6 * links + qd
    else:
        expected = q + qd
        assert (q, qd) == (15, 14)
    assert env.state_size == expected
    assert env.action_size == model.act_size()
    assert env.backend == "spring"
    assert env.control_period == pytest.approx(float(model.opt.timestep) * env.n_frames)
    assert max(env.goal_indices) < env.state_size
    # Shapes through the real code paths, traced without compiling.
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert state.obs.shape == (env.observation_size,) and state.obs.dtype == jnp.float32
    assert state.goal.shape == (env.goal_size,)
    state = jax.eval_shape(env.step, state, jnp.zeros(env.action_size))
    assert state.obs.shape == (env.observation_size,) and state.obs.dtype == jnp.float32


@pytest.mark.parametrize("name", ["ant_u_maze", "humanoid_big_maze"])
def test_maze_model_has_a_box_per_reachable_wall_cell(name):
    import mujoco

    env = make(name)
    model = env.sys.mj_model
    walls = wall_grid(PAPER_LAYOUTS[env.maze])
    free = ~walls
    expected = {
        f"wall_{i}_{j}"
        for i, j in np.argwhere(walls)
        if free[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].any()
    }
    names = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in range(model.ngeom)}
    assert {n for n in names if n and n.startswith("wall_")} == expected
    for wall in expected:
        g = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, wall)
        i, j = map(int, wall.split("_")[1:])
        np.testing.assert_allclose(
            model.geom_pos[g][:2], [i * env.cell_size, j * env.cell_size]  # the paper's convention
        )
        np.testing.assert_allclose(model.geom_size[g][:2], [env.cell_size / 2] * 2)


# -- compiled behaviour -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reacher", "ant", "ant_u_maze"])
def test_reset_step_jit_vmap_shapes_and_goals(name):
    c = _compiled(name)
    env = c.env
    state = c.reset(_keys(0))
    for s in (state, c.step(state, jax.random.uniform(jax.random.PRNGKey(1), (N, env.action_size),
                                                       minval=-1, maxval=1))):  # fmt: skip
        assert s.obs.shape == (N, env.observation_size) and s.obs.dtype == jnp.float32
        assert np.isfinite(np.asarray(s.obs)).all()
        np.testing.assert_array_equal(s.obs[:, env.state_size :], s.goal)
        assert s.metrics["dist"].shape == (N,) and s.metrics["dist"].dtype == jnp.float32
        assert s.metrics["success"].dtype == jnp.float32
        achieved = np.asarray(s.obs)[:, list(env.goal_indices)]
        np.testing.assert_allclose(
            s.metrics["dist"], np.linalg.norm(achieved - np.asarray(s.goal), axis=-1), rtol=1e-5
        )
    after = s
    assert int(after.steps[0]) == 1 and float(after.done[0]) == 0.0
    np.testing.assert_array_equal(after.goal, state.goal)
    goal = np.asarray(state.goal)
    assert not np.allclose(goal[0], goal[1])  # goals are drawn per key
    if name == "reacher":
        assert (np.linalg.norm(goal[:, :2], axis=1) <= 0.2 + 1e-6).all()
        np.testing.assert_allclose(goal[:, 2], 0.01, atol=1e-3)
    elif name == "ant":
        np.testing.assert_allclose(np.linalg.norm(goal, axis=1), 10.0, rtol=1e-5)
        assert (np.abs(np.asarray(state.obs)[:, :2]) <= 0.1 + 1e-6).all()  # starts at the origin
    else:  # the paper's start cell (plus 0.1 reset noise) and one of its goal cells
        layout = PAPER_LAYOUTS[env.maze]
        goals = marked_cells(layout, "g") * env.cell_size
        start = marked_cells(layout, "r")[0] * env.cell_size
        torso = np.asarray(state.obs)[:, :2]
        for g, t in zip(goal, torso, strict=True):
            assert np.min(np.linalg.norm(goals - g, axis=1)) < 1e-5
            assert np.abs(t - start).max() <= 0.1 + 1e-6


def test_same_seed_same_trajectory():
    c = _compiled("ant")

    def rollout(seed):
        state = c.reset(_keys(seed))
        actions = jax.random.uniform(jax.random.PRNGKey(seed + 100), (5, N, c.env.action_size),
                                     minval=-1, maxval=1)  # fmt: skip
        obs = [state.obs]
        for a in actions:
            state = c.step(state, a)
            obs.append(state.obs)
        return np.stack(obs)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_reacher_fingertip_dist_and_success_on_hand_built_states():
    c = _compiled("reacher")
    theta = np.array([[0.0, 0.0], [0.7, -1.2]], np.float32)
    tip = np.stack(
        [
            0.1 * np.cos(theta[:, 0]) + 0.11 * np.cos(theta.sum(1)),
            0.1 * np.sin(theta[:, 0]) + 0.11 * np.sin(theta.sum(1)),
            np.full(2, 0.01),
        ],
        axis=1,
    )
    goal = tip + np.array([[0.03, 0.0, 0.0], [0.0, 0.07, 0.0]])
    q = np.concatenate([theta, goal[:, :2]], axis=1)  # the target's slide joints sit at the goal
    qd = np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]], np.float32)  # joint 0 turning at 1 rad/s
    s = c.state_at(q, qd, goal)
    state = np.asarray(s.obs)[:, : c.env.state_size]
    np.testing.assert_allclose(state[:, 0:2], np.cos(theta), atol=1e-6)
    np.testing.assert_allclose(state[:, 2:4], np.sin(theta), atol=1e-6)
    np.testing.assert_allclose(state[:, 4:7], tip, atol=1e-5)
    np.testing.assert_allclose(state[0, 7:10], [-tip[0, 1], tip[0, 0], 0.0], atol=1e-5)
    np.testing.assert_allclose(state[1, 7:10], 0.0, atol=1e-6)
    np.testing.assert_allclose(s.metrics["dist"], [0.03, 0.07], atol=1e-5)
    np.testing.assert_array_equal(s.metrics["success"], [1.0, 0.0])  # threshold 0.05


def test_ant_torso_dist_and_success_on_hand_built_states():
    c = _compiled("ant_u_maze")
    env = c.env
    goal = np.tile(marked_cells(PAPER_LAYOUTS["u"], "g")[2] * env.cell_size, (N, 1))
    q = np.tile(np.asarray(env.sys.init_q), (N, 1))
    q[:, :2] = goal + np.array([[0.3, 0.0], [0.0, -0.6]])
    qd = np.zeros((N, env.sys.qd_size()), np.float32)
    qd[:, 6] = 0.5
    s = c.state_at(q, qd, goal)
    state = np.asarray(s.obs)[:, : env.state_size]
    np.testing.assert_allclose(state[:, :15], q, atol=1e-5)
    np.testing.assert_allclose(state[:, 15:], qd, atol=1e-5)
    np.testing.assert_allclose(s.metrics["dist"], [0.3, 0.6], atol=1e-5)
    np.testing.assert_array_equal(s.metrics["success"], [1.0, 0.0])  # threshold 0.5


def test_ant_maze_walls_block_the_ant():
    """Thrown at 10 m/s into a wall and a corner, with a fixed action, the ant's torso stops
    at the wall: it never gets within 0.15 m of a wall cell (its torso sphere has r=0.25)."""
    c = _compiled("ant_u_maze")
    env = c.env
    cell = env.cell_size
    u = PAPER_LAYOUTS["u"]
    assert u[1][0] == "#" and u[0][1] == "#" and u[1][1] != "#"
    q = np.tile(np.asarray(env.sys.init_q), (N, 1))
    q[:, :2] = cell  # centre of cell (1, 1); wall cells (0, 1) at -x and (1, 0) at -y
    qd = np.zeros((N, env.sys.qd_size()), np.float32)
    qd[0, :2] = [-10.0, 0.0]
    qd[1, :2] = [-7.0, -7.0]
    state = c.state_at(q, qd, np.zeros((N, 2)))
    action = jnp.full((N, env.action_size), 0.5)
    xy = []
    for _ in range(60):  # 3 s
        state = c.step(state, action)
        xy.append(np.asarray(state.obs)[:, :2])
    xy = np.stack(xy)
    assert np.isfinite(xy).all()
    assert xy[:, :, 0].min() < cell / 2 + 0.5  # it did reach the wall ...
    margin = 0.15
    for d in ([margin, 0], [-margin, 0], [0, margin], [0, -margin]):
        assert not np.asarray(env.is_wall(jnp.asarray(xy + np.array(d)))).any()  # ... not into it


def test_an_unhealthy_ant_ends_its_episode_and_auto_reset_restarts_it():
    """As in the paper: torso z outside [0.2, 1.0] m ends the episode at once."""
    from crl_distill.envs import auto_reset

    c = _compiled("ant")
    env = c.env
    q = np.tile(np.asarray(env.sys.init_q), (N, 1))
    q[1, 2] = 1.5  # env 1 is dropped from 1.5 m: above the healthy range; env 0 stands
    state = c.state_at(q, np.zeros((N, env.sys.qd_size()), np.float32), np.ones((N, 2)))
    state = c.step(state, jnp.zeros((N, env.action_size)))
    np.testing.assert_array_equal(state.terminated, [0.0, 1.0])
    np.testing.assert_array_equal(state.done, [0.0, 1.0])
    fresh = jax.vmap(auto_reset, in_axes=(None, 0, 0))(env, state, _keys(3))
    np.testing.assert_array_equal(fresh.steps, [1, 0])  # only the fallen one restarted
    assert float(fresh.obs[1, 2]) > 0.2


def test_reacher_physics_stays_bounded_under_bang_bang_actions():
    """Why the reacher integrates at 0.005 s: at the reference's 0.01 s it diverges."""
    c = _compiled("reacher")
    state = c.reset(_keys(0))
    for k in range(100):  # 4 s of full-scale actions, alternating every 0.4 s
        state = c.step(state, jnp.full((N, 2), 1.0 if (k // 10) % 2 else -1.0))
    assert np.abs(np.asarray(state.sim.qd)).max() < 100


def test_blown_up_physics_keeps_state_finite():
    """A non-finite physics step is dropped: the state freezes and stays finite."""
    c = _compiled("reacher")
    q = np.zeros((N, 4), np.float32)
    qd = np.zeros((N, 4), np.float32)
    qd[0, :2] = 3e38  # overflows to inf/nan inside the step
    s0 = c.state_at(q, qd, np.zeros((N, 3)))
    s1 = c.step(s0, jnp.zeros((N, 2)))
    assert np.isfinite(np.asarray(s1.obs)).all() and np.isfinite(np.asarray(s1.metrics["dist"])).all()
    np.testing.assert_array_equal(s1.sim.q[0], s0.sim.q[0])  # frozen
    np.testing.assert_array_equal(s1.steps, [1, 1])


# -- long checks --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ant_hardest_maze", "humanoid_u_maze"])
def test_kicked_random_walks_never_enter_a_wall(name):
    """Robots thrown in random directions from random cells, then driven by random actions."""
    env = make(name)
    n_envs, n_steps = 16, 200
    speed = 8.0 if name.startswith("ant") else 4.0
    # how close the torso centre may come to a wall cell: the ant's torso sphere has r=0.25,
    # the humanoid's torso capsules r=0.07-0.09, and its torso origin leans over them.
    margin = 0.1 if name.startswith("ant") else 0.05

    @jax.jit
    def walk(key):
        k0, k1, k2 = jax.random.split(key, 3)
        state = jax.vmap(env.reset)(jax.random.split(k0, n_envs))
        ang = 2 * jnp.pi * jax.random.uniform(k1, (n_envs,))
        qd = state.sim.qd.at[:, :2].set(speed * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1))
        state = jax.vmap(env.state_at)(state.sim.q, qd, state.goal)

        def body(s, k):
            a = jax.random.uniform(k, (n_envs, env.action_size), minval=-1, maxval=1)
            s = jax.vmap(env.step)(s, a)
            return s, s.obs[:, :2]

        return jax.lax.scan(body, state, jax.random.split(k2, n_steps))[1]

    xy = np.asarray(walk(jax.random.PRNGKey(0)))
    assert np.isfinite(xy).all()

    def near_wall(dist):
        offsets = ([dist, 0], [-dist, 0], [0, dist], [0, -dist])
        return np.any([np.asarray(env.is_wall(jnp.asarray(xy + np.array(d)))) for d in offsets], 0)

    assert not near_wall(margin).any()
    assert near_wall(0.5).any(axis=0).mean() >= 0.25  # most walks really met a wall
