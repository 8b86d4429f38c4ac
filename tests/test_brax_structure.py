"""How the brax envs are put together: `control_period` derived from timestep x n_frames (and
its recorded values unchanged), maze options composed with the robot's, and the one mjx maze
step that composition makes possible. Only the last test builds physics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs import make, names
from crl_distill.envs.ant import Ant, AntMaze
from crl_distill.envs.brax_base import BraxGoalEnv
from crl_distill.envs.humanoid import HumanoidMaze
from crl_distill.errors import CrlDistillError

BRAX_LIKE = [n for n in names() if isinstance(make(n), BraxGoalEnv)]

#: seconds per step as recorded before control_period was derived (exported files, docs)
RECORDED = {"reacher": 0.04, "ant": 0.05, "humanoid": 0.03, "arm": 0.05}


def _recorded(name: str) -> float:
    return 0.015 if name.startswith("humanoid_") else RECORDED[name.split("_")[0]]


# -- control_period ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BRAX_LIKE)
def test_control_period_is_the_recorded_value_exactly(name):
    env = make(name)
    want = _recorded(name)
    # Exactly, not approximately: 0.003 x 10 in float is 0.030000000000000002, which exported
    # metadata and `crl-distill envs --json` would then show.
    assert env.control_period == want and repr(env.control_period) == repr(want)
    assert env.describe()["control_period"] == want
    assert abs(env.control_period - env.timestep * env.n_frames) < 1e-15


@pytest.mark.parametrize("name", BRAX_LIKE)
def test_control_period_is_typed_nowhere_but_derived(name):
    for cls in type(make(name)).__mro__:
        if cls is not BraxGoalEnv and issubclass(cls, BraxGoalEnv):
            assert "control_period" not in vars(cls), f"{cls.__name__} sets control_period by hand"


def test_control_period_follows_timestep_and_frames():
    env = make("ant")
    env.n_frames = 4
    assert env.control_period == 0.02
    env.timestep = 0.0025
    assert env.control_period == 0.01
    # The humanoid maze changes only its timestep; its period follows.
    assert HumanoidMaze("u").control_period == 0.015 and "n_frames" not in vars(HumanoidMaze)


# -- maze options ------------------------------------------------------------------------------


def test_maze_options_are_the_robots_plus_the_mazes_less_the_excluded():
    assert AntMaze.options == {"backend": str, "goals": str}
    assert set(Ant.options) - set(AntMaze.options) == set(AntMaze.excluded_options) == {"goal_dist"}
    assert HumanoidMaze.options == {"goals": str}
    for name in names():
        if name.startswith("ant_"):
            assert make(name).options == AntMaze.options
        if name.startswith("humanoid_"):
            assert make(name).options == HumanoidMaze.options


def test_an_excluded_option_is_refused_with_its_reason():
    with pytest.raises(CrlDistillError,
                       match=r"no option 'goal_dist': .*not a distance .*options: backend, goals"):
        make("ant_u_maze:goal_dist=4")


@pytest.mark.parametrize("spec,match", [
    ("ant_u_maze:backend=warp", "backend must be one of"),  # the robot's check, reached by super()
    ("ant_u_maze:goals=near", "goals must be one of"),
    ("humanoid_u_maze:backend=mjx", "no option 'backend'"),
])
def test_bad_maze_options_are_one_line_errors(spec, match):
    with pytest.raises(CrlDistillError, match=match):
        make(spec)


def test_ant_maze_options_combine():
    env = make("ant_u_maze_eval:goals=free,backend=mjx")
    assert env.name == "ant_u_maze_eval:backend=mjx,goals=free"
    assert env.backend == "mjx" and env.goals == "free" and env.maze == "u_eval"
    assert env.describe()["options"] == {"backend": "mjx", "goals": "free"}
    assert "free cells" in env.goal_distribution
    # The same walls as on the spring pipeline; only the solver differs.
    spring = make("ant_u_maze_eval")
    assert env.model_xml().count('name="wall_') == spring.model_xml().count('name="wall_') > 0


def test_ant_maze_on_mjx_resets_steps_and_touches_its_walls():
    import mujoco

    env = make("ant_u_maze:backend=mjx")
    sys = env.sys
    # Torso at x = 2.1 m: its 0.25 m sphere overlaps wall cell (0, 1), which ends at x = 2.
    q = sys.init_q.at[:2].set(jnp.array([2.1, 4.0]))

    def start_and_steps(key):
        start = env.state_at(q, jnp.zeros(sys.qd_size()), jnp.array([4.0, 4.0]))
        return start, env.step(start, jnp.zeros(env.action_size)), env.step(env.reset(key), jnp.full(8, 0.3))

    # One compile for all three, with XLA's backend optimisation off (compile time is the cost).
    start, pushed, fresh = jax.jit(start_and_steps, compiler_options={
        **env.jit_options, "xla_backend_optimization_level": 0})(jax.random.PRNGKey(0))
    contact = start.sim.contact
    geoms = [[mujoco.mj_id2name(sys.mj_model, mujoco.mjtObj.mjOBJ_GEOM, int(g)) for g in pair]
             for pair in np.asarray(contact.geom)]
    touching = {tuple(p) for p, d in zip(geoms, np.asarray(contact.dist), strict=True) if d < 0}
    assert ("torso_geom", "wall_0_1") in touching
    assert np.isfinite(np.asarray(pushed.obs)).all() and int(pushed.steps) == 1
    assert float(pushed.obs[0]) > 2.1  # pushed out of the wall, not through it
    assert np.isfinite(np.asarray(fresh.obs)).all() and fresh.obs.shape == (env.observation_size,)
    assert int(fresh.steps) == 1 and float(fresh.metrics["dist"]) > 0
