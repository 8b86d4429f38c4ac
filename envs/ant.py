"""The ant: a quadruped whose torso reaches an x-y goal, in the open (`ant`) and in the paper's
mazes (`ant_<maze>_maze`, with far-goal `_eval` variants).

State (29): 15 qpos (torso x, y, z, quaternion, 8 joints) + 14 qvel; goal: torso x, y, 10 m
away in a uniform direction (`ant:goal_dist=D` for another distance); in a maze, the paper's start
cell ('r', plus the 0.1 reset noise) and one of its goal cells ('g', `mazes.PAPER_LAYOUTS`),
or any two free cells with `:goals=free` (an easier task). Physics, sampling and episode
length follow the public JaxGCRL / scaling-crl suite as its code runs on brax 0.10.1
(reimplemented, not copied): 0.005 s x 10 = 0.05 s per step, and the episode ends when the torso
z leaves [0.2, 1.0] m. Maze walls (4 m cells, 2 m high) block the torso, hip capsules and feet,
as in the paper's model. `backend=mjx` (open or maze) runs MuJoCo's own solver.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from crl_distill.envs.brax_base import BraxGoalEnv, _HealthyTorso, _MazeMixin

#: the paper's ant mazes, and those with a far-goals `_eval` variant
ANT_MAZES = ("u", "u2", "u3", "u4", "u5", "u6", "u7", "big", "hardest")
ANT_EVAL_MAZES = ("u", "u2", "u3", "u4", "u5", "u6", "u7", "big")


class Ant(_HealthyTorso, BraxGoalEnv):
    """Quadruped; the goal is a torso x-y position 10 m away in a random direction."""

    name = "ant"
    state_size = 29
    _JOINTS = ("hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4")
    state_names = ("torso_x", "torso_y", "torso_z", "torso_qw", "torso_qx", "torso_qy", "torso_qz",
                   *_JOINTS, "torso_vx", "torso_vy", "torso_vz", "torso_wx", "torso_wy", "torso_wz",
                   *(f"{j}_vel" for j in _JOINTS))
    state_units = ("m",) * 3 + ("1",) * 4 + ("rad",) * 8 + ("m/s",) * 3 + ("rad/s",) * 3 + (
        "rad/s",) * 8
    #: in actuator order (the asset's motors start with leg 4)
    action_names = tuple(f"{j}_torque" for j in (*_JOINTS[6:], *_JOINTS[:6]))
    goal_indices = (0, 1)
    action_size = 8
    episode_length = 1000
    success_threshold = 0.5
    backend = "spring"
    asset = "ant"
    timestep = 0.005
    n_frames = 10
    layout = "state = 15 qpos (torso x,y first) + 14 qvel; goal = target x,y; goal_indices 0:2"
    healthy_z_range = (0.2, 1.0)
    native_observer = "qpos_qvel"
    goal_dist = 10.0
    #: `ant:backend=mjx` simulates with MuJoCo's own solver, the physics native MuJoCo runs
    options = {"goal_dist": float, "backend": str}
    #: start: qpos0 + U(-reset_noise, reset_noise) (unit torso quaternion), velocities
    #: reset_noise * N(0, 1)
    reset_noise = 0.1

    @property
    def goal_distribution(self) -> str:
        return f"{self.goal_dist:g} m from the start in a uniform direction"

    def native_starts(self) -> dict[str, Any] | None:
        return {"rule": "ant", "q_noise": self.reset_noise, "qd_std": self.reset_noise,
                "goal_dist": self.goal_dist}

    def check_options(self) -> None:
        super().check_options()
        if not self.goal_dist > 0:
            raise ValueError(f"goal_dist must be > 0, got {self.goal_dist}")

    def _observe(self, ps, ctrl):
        return jnp.concatenate([ps.q, ps.qd])

    def _noisy_start(self, key):
        k_q, k_qd = jax.random.split(key)
        sys = self.sys
        lo, hi = -self.reset_noise, self.reset_noise
        q = sys.init_q + jax.random.uniform(k_q, (sys.q_size(),), minval=lo, maxval=hi)
        q = q.at[3:7].set(q[3:7] / jnp.linalg.norm(q[3:7]))  # keep the torso quaternion unit
        qd = hi * jax.random.normal(k_qd, (sys.qd_size(),))
        return q, qd

    def _start_and_goal(self, key) -> tuple[jax.Array, jax.Array]:
        """(start torso x-y offset, goal x-y)."""
        ang = 2.0 * jnp.pi * jax.random.uniform(key)
        return jnp.zeros(2), self.goal_dist * jnp.stack([jnp.cos(ang), jnp.sin(ang)])

    def _reset(self, key):
        k_start, k_goal = jax.random.split(key)
        q, qd = self._noisy_start(k_start)
        start, goal = self._start_and_goal(k_goal)
        q = q.at[:2].add(start)
        ps = self._physics_init(q, qd)
        return ps, self._finite(self._observe(ps, None)), goal


class AntMaze(_MazeMixin, Ant):
    """The ant in a maze of 4 m cells; walls block its torso, hip capsules and feet (as in the
    paper's model)."""

    cell_size = 4.0
    wall_height = 2.0  # the paper's: half a cell
    wall_geoms = (
        "torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom",
        "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom",
    )  # fmt: skip
    #: per geom-type group (5 spheres, 4 capsules), each near at most ~3 wall cells
    max_geom_pairs = 16

    def __init__(self, maze: str):
        self._init_maze("ant", maze)
        self.layout = (
            f"state = 15 qpos (torso x,y first) + 14 qvel; goal = target x,y (maze '{maze}', "
            f"{self.cell_size:g} m cells); goal_indices 0:2"
        )


__all__ = ["ANT_EVAL_MAZES", "ANT_MAZES", "Ant", "AntMaze"]
