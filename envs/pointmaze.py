"""Pure-JAX point mass in a grid maze: the fast CPU environment.

The action is a velocity in [-1, 1]^2 scaled by `max_speed` cells per step. Motion is applied one
axis at a time and, if the destination cell is a wall, clamped to the edge of the current cell.
Since |dx| < 1 cell, a move can never jump over a wall cell and every intermediate position lies
in a free cell, so the point can never pass through or end inside a wall, whatever the action.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill.envs.base import GoalEnv
from crl_distill.envs.mazes import POINT_LAYOUTS, free_cells, wall_grid

_EDGE = 1e-3  # how close (in cells) the point may get to a wall's face


class PointMaze(GoalEnv):
    state_size = 2
    state_names = ("x", "y")
    state_units = ("cell", "cell")
    action_names = ("velocity_x", "velocity_y")
    goal_indices = (0, 1)
    action_size = 2
    success_threshold = 0.5
    backend = "jax"
    control_period = 0.05
    layout = "state = point x, y (cell units); goal = target x, y; goal_indices 0:2"
    goal_distribution = "start and goal uniform in two different free cells"

    def __init__(self, maze: str, episode_length: int, max_speed: float = 0.2):
        if not 0 < max_speed < 1:
            raise ValueError("max_speed must be in (0, 1) cells per step")
        self.name = f"pointmaze_{maze}"
        self.maze = maze
        self.episode_length = episode_length
        self.max_speed = max_speed
        rows = POINT_LAYOUTS[maze]
        self._walls_np = wall_grid(rows)
        self._free_np = free_cells(rows).astype(np.float32)
        self.walls = jnp.asarray(self._walls_np)
        self.free = jnp.asarray(self._free_np)

    def is_wall(self, xy: jax.Array) -> jax.Array:
        """[..., 2] positions -> [...] bool, True inside a wall cell (outside the grid counts)."""
        col = jnp.floor(xy[..., 0]).astype(jnp.int32)
        row = jnp.floor(xy[..., 1]).astype(jnp.int32)
        h, w = self._walls_np.shape
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        return ~inside | self.walls[jnp.clip(row, 0, h - 1), jnp.clip(col, 0, w - 1)]

    def _sample_point_in_cell(self, key: jax.Array, cell: jax.Array) -> jax.Array:
        # (row, col) -> (x, y), kept away from the cell's faces.
        jitter = jax.random.uniform(key, (2,), minval=0.1, maxval=0.9)
        return jnp.stack([cell[1], cell[0]]) + jitter

    def _reset(self, key):
        k_start, k_goal, k_js, k_jg = jax.random.split(key, 4)
        n = self.free.shape[0]
        i_start = jax.random.randint(k_start, (), 0, n)
        # Goal in a different free cell: draw from n-1 and skip over the start's index.
        i_goal = jax.random.randint(k_goal, (), 0, n - 1)
        i_goal = i_goal + (i_goal >= i_start)
        pos = self._sample_point_in_cell(k_js, self.free[i_start])
        goal = self._sample_point_in_cell(k_jg, self.free[i_goal])
        return pos, pos, goal

    def _move_axis(self, pos: jax.Array, delta: jax.Array, axis: int) -> jax.Array:
        target = pos.at[axis].add(delta)
        cell_lo = jnp.floor(pos[axis])
        clamped = jnp.clip(target[axis], cell_lo + _EDGE, cell_lo + 1.0 - _EDGE)
        return jnp.where(self.is_wall(target), pos.at[axis].set(clamped), target)

    def _step(self, sim, action):
        delta = action * self.max_speed
        pos = self._move_axis(sim, delta[0], 0)
        pos = self._move_axis(pos, delta[1], 1)
        return pos, pos
