"""The paper's environment facts, pinned: time per step, early termination, maze layouts, start
and goal cells, wall heights and collision sets, state sizes, and how termination reaches the
replay buffer and the evaluator. Nothing here builds brax physics (see test_brax_envs.py).

Each expected value is a fact read from the public reference code (scaling-crl on JaxGCRL, with
brax 0.10.1 as it pins), written out here so that a change to ours shows up as a failure.
"""

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.envs import make, names
from crl_distill.envs.brax_envs import ANT_EVAL_MAZES, ANT_MAZES, HUMANOID_MAZES
from crl_distill.envs.mazes import PAPER_LAYOUTS, marked_cells, wall_grid
from crl_distill.envs.pointmaze import PointMaze
from crl_distill.errors import CrlDistillError
from crl_distill.metrics import episode_metrics
from crl_distill.teacher.config import TeacherConfig
from crl_distill.teacher.crl import CRL, Replay, replay_insert, sample_hindsight

# -- time per env step -------------------------------------------------------------------------

PAPER_DT = {"reacher": 0.04, "ant": 0.05, "humanoid": 0.03, "arm": 0.05}


@pytest.mark.parametrize("name", [n for n in names() if not n.startswith("pointmaze")])
def test_time_per_step_is_the_papers(name):
    env = make(name)
    # The humanoid mazes halve the humanoid's dt.
    want = 0.015 if name.startswith("humanoid_") else PAPER_DT[name.split("_")[0]]
    assert env.control_period == pytest.approx(want)
    assert env.timestep * env.n_frames == pytest.approx(want)
    assert env.describe()["control_period"] == pytest.approx(want)


# -- early termination ------------------------------------------------------------------------


@pytest.mark.parametrize("name,lo,hi", [("ant", 0.2, 1.0), ("ant_big_maze", 0.2, 1.0),
                                        ("humanoid", 1.0, 2.0), ("humanoid_u_maze", 1.0, 2.0)])
def test_unhealthy_torso_height_terminates(name, lo, hi):
    env = make(name)
    z = jnp.array([lo - 1e-3, lo + 1e-3, (lo + hi) / 2, hi - 1e-3, hi + 1e-3])
    state_vec = jnp.zeros((5, env.state_size)).at[:, 2].set(z)
    ended = jax.vmap(lambda v: env._terminated(None, v))(state_vec)
    np.testing.assert_array_equal(np.asarray(ended), [True, False, False, False, True])
    assert env.describe()["termination"] == f"torso z outside [{lo:g}, {hi:g}] m"


def test_reacher_and_point_mazes_never_terminate():
    for name in ("reacher", "pointmaze_u"):
        env = make(name)
        assert env.describe()["termination"] == "none"
        assert not bool(env._terminated(None, jnp.full(env.state_size, 1e6)))


class _FallingMaze(PointMaze):
    """A point maze whose episodes start in cell (1, 1) and end early once the point passes
    x = 2.5: stands in for a robot that falls, with episodes of many different lengths."""

    def _reset(self, key):
        pos, _, goal = super()._reset(key)
        pos = jnp.array([1.1, 1.1]) + 0.8 * jax.random.uniform(key, (2,))
        return pos, pos, goal

    def _terminated(self, sim, state_vec):
        return state_vec[0] > 2.5


def test_point_mass_terminates_resets_and_counts_its_episode():
    env = _FallingMaze("u", episode_length=50)
    s = env.reset(jax.random.PRNGKey(0))
    s = s.replace(sim=jnp.array([2.45, 1.5]))
    s = env.step(s, jnp.array([1.0, 0.0]))
    assert float(s.done) == 1.0 and float(s.terminated) == 1.0 and int(s.steps) == 1


def test_hindsight_goals_never_cross_an_early_termination():
    env = _FallingMaze("u", episode_length=40)
    cfg = TeacherConfig(env="pointmaze_u", num_envs=8, unroll_length=25, batch_size=16,
                        updates_per_iter=1, iters_per_epoch=1, epochs=1, replay_capacity=128,
                        prefill_steps=2, num_eval_envs=2)
    crl = CRL(cfg, env)
    ts = crl.init_train_state(jax.random.PRNGKey(0))
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 8))
    episode = jnp.zeros(8, jnp.int32)
    replay = Replay.empty(128, 8, env.observation_size, env.action_size)
    key = jax.random.PRNGKey(2)
    lengths = []
    for _ in range(12):  # 300 steps into a 128-row ring
        key, k_c, k_s = jax.random.split(key, 3)
        state, episode, tr = crl.collect(ts.actor, state, episode, k_c, 25, random_actions=True)
        replay = replay_insert(replay, tr)
        b = sample_hindsight(k_s, replay, 4096, env, gamma=0.9)
        assert bool(jnp.all(b["ep_i"] == b["ep_j"])), "goal taken from another episode"
        assert bool(jnp.all(b["t_j"] > b["t_i"])), "goal not strictly in the future"
        t, ep = np.asarray(tr.t), np.asarray(tr.episode)
        lengths += [t[k, n] + 1 for k in range(24) for n in range(8) if ep[k + 1, n] != ep[k, n]]
    # The test means something only if episodes really ended early, at many lengths.
    assert min(lengths) < 20 and len(set(lengths)) > 5 and max(lengths) <= 40, lengths


def test_evaluation_stops_counting_at_the_first_termination():
    success = jnp.array([[0, 1], [1, 1], [1, 0], [1, 1]], jnp.float32)  # [T=4, E=2]
    terminated = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]], jnp.float32)
    dist = jnp.array([[9, 1], [2, 2], [3, 3], [4, 4]], jnp.float32)
    m = episode_metrics(success, terminated, dist)
    # Episode 0 ends at its 2nd step: its success there counts, the later two do not.
    np.testing.assert_array_equal(np.asarray(m["time_at_goal"]), [1, 3])
    np.testing.assert_array_equal(np.asarray(m["success_any"]), [1, 1])
    np.testing.assert_array_equal(np.asarray(m["final_dist"]), [2, 4])


# -- maze layouts, starts and goals -----------------------------------------------------------

#: (rows, cols, start cell, number of goal cells) of the paper's mazes
PAPER_MAZES = {
    "u": (5, 5, (1, 1), 6), "u2": (5, 6, (1, 1), 8), "u3": (5, 7, (1, 1), 10),
    "u4": (7, 5, (2, 1), 10), "u5": (7, 8, (2, 1), 16), "u6": (7, 7, (2, 1), 14),
    "u7": (7, 6, (2, 1), 12), "big": (8, 8, (1, 1), 25), "hardest": (9, 12, (1, 1), 45),
}


@pytest.mark.parametrize("maze", list(PAPER_MAZES))
def test_paper_maze_grids(maze):
    rows, cols, start, n_goals = PAPER_MAZES[maze]
    layout = PAPER_LAYOUTS[maze]
    assert (len(layout), {len(r) for r in layout}) == ((rows, {cols}))
    walls = wall_grid(layout)
    assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    assert [tuple(c) for c in marked_cells(layout, "r")] == [start]
    assert len(marked_cells(layout, "g")) == n_goals
    if f"{maze}_eval" in PAPER_LAYOUTS:  # same walls and start, a subset of the goals
        ev = PAPER_LAYOUTS[f"{maze}_eval"]
        np.testing.assert_array_equal(wall_grid(ev), walls)
        assert [tuple(c) for c in marked_cells(ev, "r")] == [start]
        goals = {tuple(c) for c in marked_cells(layout, "g")}
        eval_goals = {tuple(c) for c in marked_cells(ev, "g")}
        assert eval_goals and eval_goals < goals


def test_paper_maze_names_are_registered():
    registered = set(names())
    assert {f"ant_{m}_maze" for m in ANT_MAZES} <= registered
    assert {f"ant_{m}_maze_eval" for m in ANT_EVAL_MAZES} <= registered
    assert {f"humanoid_{m}_maze" for m in HUMANOID_MAZES} <= registered
    assert set(ANT_MAZES) == set(PAPER_MAZES)


def _draw(env, n=2000):
    return jax.vmap(env._start_and_goal)(jax.random.split(jax.random.PRNGKey(0), n))


@pytest.mark.parametrize("name", ["ant_u_maze", "ant_big_maze_eval", "humanoid_hardest_maze"])
def test_paper_start_cell_and_goal_cells(name):
    env = make(name)
    layout = PAPER_LAYOUTS[env.maze]
    start, goal = (np.asarray(x) for x in _draw(env))
    # Cell (i, j) is centred at (i, j) * cell_size, as in the paper's code.
    np.testing.assert_allclose(start, np.broadcast_to(marked_cells(layout, "r")[0] * env.cell_size,
                                                      start.shape))
    goal_cells = {tuple(c) for c in marked_cells(layout, "g")}
    drawn = {tuple(c) for c in np.rint(goal / env.cell_size).astype(int)}
    assert drawn == goal_cells  # every goal cell drawn, nothing else
    np.testing.assert_allclose(goal, np.rint(goal / env.cell_size) * env.cell_size, atol=1e-5)


def test_free_goals_option_draws_from_every_free_cell():
    env = make("ant_u_maze:goals=free")
    assert env.name == "ant_u_maze:goals=free"
    start, goal = (np.asarray(x) for x in _draw(env))
    free = {tuple(c) for c in np.argwhere(~wall_grid(PAPER_LAYOUTS["u"]))}
    assert {tuple(c) for c in np.rint(start / 4).astype(int)} == free
    assert {tuple(c) for c in np.rint(goal / 4).astype(int)} == free
    assert not np.any(np.all(start == goal, axis=1))


def test_ant_goal_distance_option():
    assert make("ant").goal_dist == 10.0  # the paper's default is unchanged
    env = make("ant:goal_dist=3")
    _, goal = _draw(env, 200)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(goal), axis=1), 3.0, rtol=1e-5)


@pytest.mark.parametrize("spec,match", [
    ("ant:goal_dist=far", "not a valid float"), ("ant:speed=2", "has no option 'speed'"),
    ("ant:goal_dist=0", "goal_dist must be > 0"), ("ant_u_maze:goals=any", "goals must be"),
    ("reacher:x", "not key=value"), ("ant_u9_maze", "unknown environment"),
])
def test_bad_env_specs_are_one_line_errors(spec, match):
    with pytest.raises(CrlDistillError, match=match):
        make(spec)


# -- the maze models: wall height and what collides with walls --------------------------------


def _maze_model(name):
    env = make(name)
    root = ET.fromstring(env.model_xml())
    walls = [g for g in root.iter("geom") if (g.get("name") or "").startswith("wall_")]
    robot = root.find("worldbody/body")
    hits = {g.get("name") for g in robot.iter("geom") if int(g.get("conaffinity", 0)) & 2}
    return env, walls, robot, hits


@pytest.mark.parametrize("name,height", [("ant_u_maze", 2.0), ("humanoid_big_maze", 1.0)])
def test_walls_are_half_a_cell_high(name, height):
    env, walls, _, _ = _maze_model(name)
    assert walls
    for w in walls:
        z, hz = float(w.get("pos").split()[2]), float(w.get("size").split()[2])
        assert z + hz == pytest.approx(height)
    assert height == env.cell_size / 2


def test_ant_walls_collide_with_torso_hips_and_feet():
    _, _, _, hits = _maze_model("ant_u_maze")
    assert hits == {"torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom",
                    "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom"}


def test_humanoid_walls_collide_with_every_geom():
    _, _, robot, hits = _maze_model("humanoid_u_maze")
    every = {g.get("name") for g in robot.iter("geom")}
    assert len(every) > 10 and hits == every


# -- state sizes and the humanoid difference ---------------------------------------------------


def test_state_sizes_and_the_stated_humanoid_difference():
    sizes = {n: make(n).state_size for n in ("reacher", "ant", "ant_hardest_maze", "humanoid")}
    assert sizes == {"reacher": 10, "ant": 29, "ant_hardest_maze": 29, "humanoid": 246}
    assert make("humanoid").reference_state_size == 268
    assert make("ant").reference_state_size is None


def test_envs_listing_fits_80_columns_and_shows_dt_termination_and_goals():
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "crl_distill", "envs"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80
    header = next(x for x in lines if "name" in x and "dt s" in x)
    for col in ("obs", "act", "goal", "steps", "succ<", "term"):
        assert col in header
    table = {x.split("│")[1].strip(): x for x in lines if x.startswith("│")}
    assert set(names()) <= set(table)  # every name in full, none cut
    assert "0.04" in table["reacher"] and "0.015" in table["humanoid_u_maze"]
    text = " ".join(lines)
    assert "torso z outside [0.2, 1] m" in text and "one of its 6 goal cells" in text
    assert "246-dim" in text  # the stated humanoid difference
