"""The brax robots as goal-conditioned environments: the registry of reacher, ant, humanoid and
their mazes (the arm tasks register in `envs/arm.py`).

One module per robot family, as brax puts one env per file: `reacher.py`, `ant.py` (+ ant
mazes), `humanoid.py` (+ humanoid mazes); the shared base and mixins in `brax_base.py`, the MJCF
edits (maze walls) in `mjcf.py`. Observation layouts, goal sampling, physics settings (spring
pipeline, timesteps, sub-steps, gears) and episode lengths follow the public JaxGCRL /
scaling-crl goal-conditioned suite (reimplemented here, not copied):

=========  =====================================================================  ============
env        state                                                                  goal
=========  =====================================================================  ============
reacher    cos(q0,q1), sin(q0,q1), fingertip x,y,z, fingertip velocity (10)        target x,y,z
ant        15 qpos (torso x,y,z, quat, 8 joints) + 14 qvel (29)                   target x,y
humanoid   24 qpos + 23 qvel + 11x10 com inertia + 11x6 com velocity + 23          target x,y,z
           actuator torques (246)                                                 (z = 1.25)
=========  =====================================================================  ============

Time per env step (`control_period` = timestep x n_frames) and early termination are the
paper's as its code runs on brax 0.10.1: reacher 0.04 s (0.005 s x 8), ant and ant mazes
0.005 s x 10 = 0.05 s, humanoid 0.003 s x 10 = 0.03 s, humanoid mazes 0.0015 s x 10 = 0.015 s.
Each robot module states its goals, termination and deliberate differences from the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from crl_distill.envs.ant import ANT_EVAL_MAZES, ANT_MAZES, Ant, AntMaze
from crl_distill.envs.base import GoalEnv
from crl_distill.envs.brax_base import BraxGoalEnv
from crl_distill.envs.humanoid import HUMANOID_MAZES, Humanoid, HumanoidMaze
from crl_distill.envs.mjcf import add_maze_walls
from crl_distill.envs.reacher import Reacher

_MAKERS: dict[str, Callable[[], GoalEnv]] = {
    "reacher": Reacher,
    "ant": Ant,
    **{f"ant_{m}_maze": functools.partial(AntMaze, m) for m in ANT_MAZES},
    **{f"ant_{m}_maze_eval": functools.partial(AntMaze, f"{m}_eval") for m in ANT_EVAL_MAZES},
    "humanoid": Humanoid,
    **{f"humanoid_{m}_maze": functools.partial(HumanoidMaze, m) for m in HUMANOID_MAZES},
}

#: every brax env name, in the order `crl-distill envs` lists them
NAMES = tuple(_MAKERS)


def make_brax_env(name: str) -> GoalEnv:
    """Build the brax environment `name` (no physics is built until first use)."""
    try:
        return _MAKERS[name]()
    except KeyError:
        raise ValueError(f"unknown brax environment {name!r}; valid: {', '.join(NAMES)}") from None


# The classes and helpers this module held before the split stay importable from it.
__all__ = ["ANT_EVAL_MAZES", "ANT_MAZES", "HUMANOID_MAZES", "NAMES", "Ant", "AntMaze", "BraxGoalEnv",
           "Humanoid", "HumanoidMaze", "Reacher", "add_maze_walls", "make_brax_env"]
