import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs import make, names
from crl_distill.envs.base import auto_reset
from crl_distill.envs.mazes import POINT_LAYOUTS, free_cells, u_maze, wall_grid
from crl_distill.errors import CrlDistillError

POINT_MAZES = ["pointmaze_u", "pointmaze_big", "pointmaze_hardest"]


@pytest.mark.parametrize("name", POINT_MAZES)
def test_reset_step_shapes_jit_vmap(name):
    env = make(name)
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    state = jax.jit(jax.vmap(env.reset))(keys)
    assert state.obs.shape == (8, env.observation_size) and state.obs.dtype == jnp.float32
    assert env.observation_size == env.state_size + env.goal_size
    state = jax.jit(jax.vmap(env.step))(state, jnp.ones((8, env.action_size)))
    assert state.obs.shape == (8, env.observation_size)
    assert state.metrics["dist"].shape == (8,) and state.metrics["success"].dtype == jnp.float32
    assert int(state.steps[0]) == 1
    np.testing.assert_array_equal(state.obs[:, env.state_size:], state.goal)


def test_same_seed_same_trajectory():
    env = make("pointmaze_big")

    def rollout(seed):
        key = jax.random.PRNGKey(seed)
        state = env.reset(key)
        actions = jax.random.uniform(key, (50, 2), minval=-1, maxval=1)
        _, obs = jax.lax.scan(lambda s, a: (env.step(s, a), env.step(s, a).obs), state, actions)
        return np.asarray(obs)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_dist_and_success_on_hand_built_states():
    env = make("pointmaze_u")
    state = env.reset(jax.random.PRNGKey(0))
    goal = jnp.array([1.5, 1.5])
    cases = [((1.5, 1.5), 0.0), ((1.5, 1.99), 0.49), ((1.5, 2.01), 0.51), ((2.5, 1.5), 1.0),
             ((1.5, 1.7), 0.2)]
    for pos, dist in cases:
        s = env._pack(jnp.array(pos), jnp.array(pos), goal, state.steps, state.terminated > 0)
        assert float(s.metrics["dist"]) == pytest.approx(dist, abs=1e-6)
        assert float(s.metrics["success"]) == float(dist < env.success_threshold)


def test_episode_done_and_auto_reset():
    env = make("pointmaze_u")
    state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for _ in range(env.episode_length - 1):
        state = step(state, jnp.zeros(2))
    assert float(state.done) == 0.0
    state = step(state, jnp.zeros(2))
    assert float(state.done) == 1.0 and int(state.steps) == env.episode_length
    fresh = auto_reset(env, state, jax.random.PRNGKey(9))
    assert int(fresh.steps) == 0 and float(fresh.done) == 0.0


@pytest.mark.parametrize("name", POINT_MAZES)
def test_random_walk_never_enters_a_wall(name):
    """Long random walks with extreme actions (including out-of-range and NaN) stay in free cells."""
    env = make(name)
    n_envs, n_steps = 64, 2000
    walls = wall_grid(POINT_LAYOUTS[env.maze])

    def walk(key):
        k0, k1, k2 = jax.random.split(key, 3)
        state = env.reset(k0)
        actions = jax.random.uniform(k1, (n_steps, 2), minval=-3.0, maxval=3.0)
        # Saturated, sign-flipping actions probe corners; a few NaNs probe input sanitising.
        actions = jnp.where(jax.random.bernoulli(k2, 0.3, (n_steps, 2)), jnp.sign(actions) * 5, actions)
        actions = actions.at[::97].set(jnp.nan)
        _, pos = jax.lax.scan(lambda s, a: (env.step(s, a), env.step(s, a).obs[:2]), state, actions)
        return pos

    pos = np.asarray(jax.jit(jax.vmap(walk))(jax.random.split(jax.random.PRNGKey(1), n_envs)))
    assert np.isfinite(pos).all()
    rows, cols = np.floor(pos[..., 1]).astype(int), np.floor(pos[..., 0]).astype(int)
    assert not walls[rows, cols].any()
    # The walk must actually move around, or the check above would be vacuous.
    assert len({(r, c) for r, c in zip(rows.ravel(), cols.ravel(), strict=True)}) > 3


def test_reset_start_and_goal_in_different_free_cells():
    env = make("pointmaze_hardest")
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 512))
    walls = wall_grid(POINT_LAYOUTS["hardest"])
    for xy in (np.asarray(states.obs[:, :2]), np.asarray(states.goal)):
        assert not walls[np.floor(xy[:, 1]).astype(int), np.floor(xy[:, 0]).astype(int)].any()
    same_cell = (np.floor(states.obs[:, :2]) == np.floor(states.goal)).all(axis=1)
    assert not same_cell.any()


def test_layouts_are_connected_and_bordered():
    for name, layout in POINT_LAYOUTS.items():
        walls = wall_grid(layout)
        assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all(), name
        cells = {tuple(c) for c in free_cells(layout)}
        todo, seen = [next(iter(cells))], set()
        while todo:
            c = todo.pop()
            if c in seen:
                continue
            seen.add(c)
            todo += [n for n in ((c[0] + 1, c[1]), (c[0] - 1, c[1]), (c[0], c[1] + 1),
                                 (c[0], c[1] - 1)) if n in cells]
        assert seen == cells, f"maze {name} has unreachable cells"
    with pytest.raises(ValueError):
        u_maze(1)


def test_registry_error_names_valid_envs():
    with pytest.raises(CrlDistillError, match="unknown environment 'pointmaze_x'.*pointmaze_u"):
        make("pointmaze_x")
    assert "ant_u_maze" in names() and "humanoid_big_maze" in names()
