"""Arm tasks (arm_reach, arm_push_easy, arm_push_hard, arm_binpick_hard): sizes, model facts,
start and goal distributions, the action mapping, jit/vmap physics, and solvability.

Compiling mjx physics on CPU is the expensive part, so the fast tests compile one task
(arm_push_easy, the one with the cube, the gripper and every observation path) once for N=2
envs, with XLA's CPU fusion emitters off (`env.jit_options`: ~2x faster to compile,
~70x faster to run) and backend optimisation off. The other tasks' physics is traced (shapes)
in the fast tests and compiled in the slow ones. The fast solvability check runs the scripted
controller of `benchmarks/arm_scripted.py` on MuJoCo's C engine with the env's own model and
action mapping; the slow one runs it through the env itself.
"""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs import arm
from crl_distill.envs.arm import ARM_MAKERS

NAMES = list(ARM_MAKERS)
N = 2
_CACHE: dict[str, SimpleNamespace] = {}
#: (state size, goal indices, action size) per task, as in the reference's arm env files
SIZES = {
    "arm_reach": (13, (7, 8, 9), 4),
    "arm_push_easy": (17, (0, 1, 2), 5),
    "arm_push_hard": (17, (0, 1, 2), 5),
    "arm_binpick_hard": (17, (0, 1, 2), 5),
}
#: (cube centre x, y, cube half-range, goal centre x, y, z, goal half-range) from the reference
REGIONS = {
    "arm_push_easy": ((-0.1, 0.6), 0.1, (0.1, 0.6, 0.03), 0.1),
    "arm_push_hard": ((-0.25, 0.65), 0.25, (0.25, 0.65, 0.03), 0.25),
    "arm_binpick_hard": ((-0.3, 0.6), 0.15, (0.3, 0.6, 0.03), 0.15),
}


def _compiled(name: str) -> SimpleNamespace:
    """env plus jitted, vmapped reset / step, shared across tests."""
    if name not in _CACHE:
        env = ARM_MAKERS[name]()
        opts = {**env.jit_options, "xla_backend_optimization_level": 0}

        def jit(f):
            return jax.jit(jax.vmap(f), compiler_options=opts)

        _CACHE[name] = SimpleNamespace(env=env, reset=jit(env.reset), step=jit(env.step))
    return _CACHE[name]


def _keys(seed: int, n: int = N) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(seed), n)


def _scripted():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "arm_scripted.py"
    spec = importlib.util.spec_from_file_location("arm_scripted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- static facts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_static_facts_match_the_reference_and_build_no_physics(name):
    env = ARM_MAKERS[name]()
    state_size, goal_indices, action_size = SIZES[name]
    assert (env.state_size, env.goal_indices, env.action_size) == (state_size, goal_indices, action_size)
    assert env.name == name and env.observation_size == state_size + 3
    assert env.success_threshold == 0.1
    assert env.episode_length == 1000  # the reference's train.py default, used for every task
    assert env.backend == "mjx"
    assert env.timestep == 0.002 and env.n_frames == 25
    assert env.control_period == pytest.approx(env.timestep * env.n_frames) == pytest.approx(0.05)
    assert env.termination == "none"
    assert env.goal_distribution and "\n" not in env.goal_distribution
    assert env.layout and "\n" not in env.layout and f"goal_indices {goal_indices[0]}:" in env.layout
    assert isinstance(env.goal_indices, tuple) and all(type(i) is int for i in env.goal_indices)
    assert "sys" not in vars(env)  # nothing built


@pytest.mark.parametrize("name", NAMES)
def test_model_is_primitives_at_the_reference_timestep_and_solver(name):
    import mujoco

    env = ARM_MAKERS[name]()
    model = env.sys.mj_model
    assert float(env.sys.opt.timestep) == pytest.approx(0.002)
    assert model.opt.timestep == pytest.approx(0.002)
    assert env.control_period == pytest.approx(float(env.sys.opt.timestep) * env.n_frames)
    assert (model.opt.iterations, model.opt.ls_iterations) == (6, 12)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    assert model.opt.impratio == pytest.approx(10.0 if name == "arm_binpick_hard" else 1.0)
    assert model.nmesh == 0 and mujoco.mjtGeom.mjGEOM_MESH not in set(model.geom_type)
    gripper = name != "arm_reach"
    assert env.sys.q_size() == (16 if gripper else 7)  # cube free joint + 7 arm + 2 fingers
    assert env.sys.act_size() == (9 if gripper else 7)
    pairs = {"arm_reach": 1, "arm_push_easy": 8, "arm_push_hard": 8, "arm_binpick_hard": 8 + 32}
    assert model.npair == pairs[name]
    assert not model.geom_contype.any() and not model.geom_conaffinity.any()  # explicit pairs only
    # Servo gains, as in the reference: joints 1-2 4500/4500, 3-4 2000/3500, 5-7 1000/2000.
    np.testing.assert_allclose(model.actuator_gainprm[:7, 0], [4500, 4500, 2000, 2000, 1000, 1000, 1000])
    np.testing.assert_allclose(-model.actuator_biasprm[:7, 1], [4500, 4500, 3500, 3500, 2000, 2000, 2000])
    if name == "arm_binpick_hard":
        walls = [model.geom(i) for i in range(model.ngeom) if model.geom(i).name.startswith("bin")]
        assert len(walls) == 8
        assert {round(float(w.size[2]) * 2, 4) for w in walls} == {0.066}


def test_reach_shapes_through_reset_and_step():
    """Traced, not compiled: the gripper-less task's own observation and action paths."""
    env = ARM_MAKERS["arm_reach"]()
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert state.obs.shape == (env.observation_size,) and state.obs.dtype == jnp.float32
    assert state.goal.shape == (3,)
    state = jax.eval_shape(env.step, state, jnp.zeros(4))
    assert state.obs.shape == (env.observation_size,) and state.obs.dtype == jnp.float32


# -- starts and goals -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REGIONS))
def test_cube_starts_and_goals_cover_the_reference_regions(name):
    env = ARM_MAKERS[name]()
    (cx, cy), cube_half, (gx, gy, gz), goal_half = REGIONS[name]
    q, goal = jax.jit(jax.vmap(env.sample_start))(_keys(0, 4096))
    q, goal = np.asarray(q), np.asarray(goal)
    cube = q[:, :3]
    for values, centre, half in ((cube[:, 0], cx, cube_half), (cube[:, 1], cy, cube_half),
                                 (goal[:, 0], gx, goal_half), (goal[:, 1], gy, goal_half)):
        assert values.min() >= centre - half - 1e-6 and values.max() <= centre + half + 1e-6
        # uniform over the whole range: both ends are reached, the middle is not favoured
        assert values.min() < centre - 0.95 * half and values.max() > centre + 0.95 * half
        assert abs(np.mean(np.abs(values - centre)) / half - 0.5) < 0.05
    np.testing.assert_allclose(cube[:, 2], 0.03)  # resting on the table
    np.testing.assert_allclose(goal[:, 2], gz)
    np.testing.assert_allclose(q[:, 3:7], np.tile([1.0, 0, 0, 0], (len(q), 1)))
    np.testing.assert_allclose(q[:, 7:14], np.tile(arm.ARM_START, (len(q), 1)), atol=1e-6)
    np.testing.assert_allclose(q[:, 14:], 0.04)
    if name == "arm_binpick_hard":  # the cube always fits inside its bin's walls
        inner = 0.19 - 0.005 - 0.03
        assert np.abs(cube[:, 0] - cx).max() <= inner and np.abs(goal[:, 0] - gx).max() <= inner


def test_reach_goals_fill_the_reference_box():
    env = ARM_MAKERS["arm_reach"]()
    q, goal = jax.jit(jax.vmap(env.sample_start))(_keys(1, 4096))
    goal = np.asarray(goal)
    lo, hi = np.array([-0.2, 0.3, 0.1]), np.array([0.2, 0.7, 0.5])
    assert (goal >= lo - 1e-6).all() and (goal <= hi + 1e-6).all()
    assert (goal.min(0) < lo + 0.01).all() and (goal.max(0) > hi - 0.01).all()
    np.testing.assert_allclose(np.asarray(q), np.tile(arm.ARM_START, (4096, 1)), atol=1e-6)


# -- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arm_reach", "arm_push_easy"])
def test_action_mapping_is_the_reference_absolute_joint_targets(name):
    env = ARM_MAKERS[name]()
    lo, hi = np.asarray(arm.TARGET_LO), np.asarray(arm.TARGET_HI)
    for a, want in ((-1.0, lo), (1.0, hi), (0.0, (lo + hi) / 2)):
        ctrl = np.asarray(env._ctrl(jnp.full(env.action_size, a)))
        np.testing.assert_allclose(ctrl[:7], want, rtol=1e-6, atol=1e-6)
    # joints 3, 5 and 7 do not move with the action
    ctrl = np.asarray(env._ctrl(jnp.asarray(np.random.default_rng(0).uniform(-1, 1, env.action_size))))
    np.testing.assert_allclose(ctrl[[2, 4, 6]], [0.0, 0.0, 1.4487], atol=1e-6)
    if name == "arm_reach":
        assert ctrl.shape == (7,)
    else:  # binary gripper: > 0 closes (servo target 0), <= 0 opens (255)
        for g, want in ((0.3, 0.0), (0.0, 255.0), (-1.0, 255.0)):
            ctrl = np.asarray(env._ctrl(jnp.array([0, 0, 0, 0, g], jnp.float32)))
            np.testing.assert_allclose(ctrl[7:], [want, want])


# -- physics (one task compiled) ----------------------------------------------------------------


def test_reset_and_step_jit_vmap_and_observation_layout():
    c = _compiled("arm_push_easy")
    env = c.env
    keys = _keys(3)
    state = c.reset(keys)
    assert state.obs.shape == (N, 20) and state.obs.dtype == jnp.float32
    q0, goal0 = jax.vmap(env.sample_start)(keys)
    np.testing.assert_allclose(state.goal, goal0, atol=1e-6)  # reset draws through sample_start
    np.testing.assert_allclose(state.obs[:, :3], q0[:, :3], atol=1e-3)
    np.testing.assert_allclose(state.obs[:, 17:], state.goal)
    actions = jnp.array([[0.5, -0.5, 0.2, 0.8, 1.0], [-0.3, 0.4, -0.6, -0.2, -1.0]])
    for _ in range(3):
        state = c.step(state, actions)
    obs, sim = np.asarray(state.obs), state.sim
    assert np.isfinite(obs).all() and (np.asarray(state.steps) == 3).all()
    link7 = env.link_index("link7")
    np.testing.assert_allclose(obs[:, 3:10], sim.q[:, 7:14], atol=1e-5)  # 7 joint angles
    np.testing.assert_allclose(obs[:, 10:13], sim.x.pos[:, link7], atol=1e-5)  # flange position
    np.testing.assert_allclose(obs[:, 13:16], sim.xd.vel[:, link7], atol=1e-4)  # flange velocity
    np.testing.assert_allclose(obs[:, 16], sim.q[:, 14] + sim.q[:, 15], atol=2e-3)  # finger gap
    assert obs[0, 16] < obs[1, 16]  # env 0 closes its gripper, env 1 opens it
    dist = np.linalg.norm(obs[:, :3] - obs[:, 17:], axis=1)
    np.testing.assert_allclose(state.metrics["dist"], dist, rtol=1e-5)
    np.testing.assert_array_equal(state.metrics["success"], (dist < 0.1).astype(np.float32))


def test_nan_and_out_of_range_actions_keep_the_state_finite():
    c = _compiled("arm_push_easy")
    state = c.reset(_keys(4))
    bad = jnp.array([[jnp.nan, jnp.inf, -jnp.inf, 1e9, jnp.nan], [-1e9, 50.0, -50.0, jnp.nan, jnp.inf]])
    for _ in range(3):
        state = c.step(state, bad)
        assert np.isfinite(np.asarray(state.obs)).all()
    # out-of-range actions act as clipped ones
    clipped = c.step(state, jnp.clip(jnp.nan_to_num(bad), -1, 1))
    again = c.step(state, bad)
    np.testing.assert_allclose(clipped.obs, again.obs, atol=1e-5)


def test_host_simulation_matches_the_env_observation():
    """The C-MuJoCo harness behind the fast solvability test sees what the env sees."""
    import mujoco

    c = _compiled("arm_push_easy")
    state = c.reset(_keys(5))
    scripted = _scripted()
    model = c.env.sys.mj_model
    data = mujoco.MjData(model)
    data.qpos[:] = np.asarray(state.sim.q[0])
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(scripted.host_observe(c.env, model, data), state.obs[0, :17], atol=1e-5)


def test_push_easy_is_solvable_by_a_scripted_controller():
    """One seed of arm_push_easy, simulated by MuJoCo's C engine with the env's model."""
    env = ARM_MAKERS["arm_push_easy"]()
    result = _scripted().host_rollout(env, seed=1, steps=80)
    assert result["dists"][0] > 0.1  # the cube does start outside the goal's 0.1 m
    assert result["final"] < 0.1


# -- slow: every task's physics compiled; the scripted controller through the env itself -------


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_task_steps_finite_under_jit_vmap(name):
    c = _compiled(name)
    state = c.reset(_keys(6))
    assert state.obs.shape == (N, c.env.observation_size)
    rng = np.random.default_rng(0)
    for i in range(5):
        a = rng.uniform(-3, 3, (N, c.env.action_size)).astype(np.float32)
        a[0, i % c.env.action_size] = np.nan
        state = c.step(state, jnp.asarray(a))
        assert np.isfinite(np.asarray(state.obs)).all()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "seed", "steps"), [("arm_push_easy", 1, 80), ("arm_push_hard", 2, 200),
                                                     ("arm_binpick_hard", 4, 150)])
def test_scripted_controller_solves_the_env(name, seed, steps):
    """Through the env itself (mjx under jit + vmap), as benchmarks/arm_scripted.py does."""
    scripted = _scripted()
    env = ARM_MAKERS[name]()
    rollouts = scripted.env_rollouts(env, seeds=seed + 1, steps=steps)
    assert rollouts["final_dist"][seed] < 0.1, rollouts
