"""benchmarks/pointmaze_diagnosis.py: the measurements behind the pointmaze_u far-end diagnosis
(corridor distances, fewest steps through the env's own dynamics, replay episodes that join the
U's far ends) on hand-built cases with known answers."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from crl_distill.envs import make
from crl_distill.teacher.crl import Replay, Transition, replay_insert


def _diagnosis():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pointmaze_diagnosis.py"
    spec = importlib.util.spec_from_file_location("pointmaze_diagnosis", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_corridor_distance_goes_around_the_wall():
    d = _diagnosis().corridor_distances(make("pointmaze_u")._walls_np)
    # (1, 2) -> (1, 3) -> (2, 3) -> (3, 3) -> (3, 2) -> (3, 1), although only 2 rows apart
    assert d[(1, 2)][(3, 1)] == 5 and d[(1, 1)][(3, 1)] == 6
    assert d[(1, 1)][(1, 2)] == 1 and d[(3, 1)][(1, 2)] == d[(1, 2)][(3, 1)]


def test_fewest_steps_respects_speed_and_walls():
    mod, env = _diagnosis(), make("pointmaze_u")
    # Open corridor, 1 cell apart at 0.2 cells/step: 3 steps leave 0.4 < 0.5 to go.
    assert mod.fewest_steps(env, np.array([1.5, 1.5]), np.array([2.5, 1.5])) == 3
    # Straight down through the wall would take ceil(1.5 / 0.2) = 8; around it x alone must
    # travel 1.5 out to column 3 and 1.0 back (>= 13 steps).
    through_wall = mod.fewest_steps(env, np.array([1.5, 1.5]), np.array([1.5, 3.5]))
    assert 13 <= through_wall < env.episode_length


def test_connecting_episodes_counts_only_same_episode_far_end_visits():
    mod = _diagnosis()
    # Three envs, 4 rows. Env 0: one episode (1, 1) -> (3, 1): joins the far ends. Env 1: the
    # same cells but split across two episodes: does not. Env 2: stays in the top row.
    xy = np.array([
        [[1.5, 1.5], [1.5, 1.5], [2.5, 1.5]],
        [[3.5, 2.5], [2.5, 1.5], [1.5, 1.5]],
        [[3.5, 3.5], [1.5, 3.5], [2.5, 1.5]],
        [[1.5, 3.5], [1.5, 3.5], [1.5, 1.5]],
    ], np.float32)
    episode = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 0]], np.int32)
    obs = np.concatenate([xy, np.zeros_like(xy)], -1)
    tr = Transition(obs=jnp.asarray(obs), action=jnp.zeros((4, 3, 2)), t=jnp.zeros((4, 3), jnp.int32),
                    episode=jnp.asarray(episode))
    replay = replay_insert(Replay.empty(4, 3, 4, 2), tr)
    out = mod.connecting_episodes(replay, state_size=2)
    assert out == {"episodes": 4, "connecting": 1}
