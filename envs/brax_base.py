"""The brax plumbing shared by every brax robot: importing brax, the `BraxGoalEnv` base and the
two behaviours several robots share (`_HealthyTorso` early termination, `_MazeMixin` mazes).

Robot models are read at run time from brax's own installed assets (`brax/envs/assets/*.xml`,
`_asset`) or from ours (`envs/assets/`), edited with ElementTree (`envs/mjcf.py`) before
`brax.io.mjcf.loads`; nothing of brax's is copied into this repo. Physics is built lazily, on
the first reset/step (or `env.sys`), so the static attributes are available without importing
brax at all. The robots themselves live one family per module: `reacher.py`, `ant.py`,
`humanoid.py`, `arm.py`; `brax_envs.py` is their registry.

Mazes (`_MazeMixin`): cell (row i, col j) is centred at world (x, y) = (i, j) * cell_size, as in
the paper's code; one box per wall cell that a robot can reach, half a cell high (ant 2 m,
humanoid 1 m) and `mjcf.WALL_DEPTH` below the floor (the paper's stop at it, so here nothing
slips under them). mjx's `max_geom_pairs` broad phase keeps only the nearest robot-wall pairs,
so the cost per step does not grow with the maze.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import re
import warnings
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill.envs.base import EnvState, GoalEnv
from crl_distill.envs.mazes import PAPER_LAYOUTS, free_cells, marked_cells, wall_grid
from crl_distill.envs.mjcf import add_maze_walls
from crl_distill.errors import require_choice

_log = logging.getLogger(__name__)

# mujoco.mjx's optional Warp backend announces its absence with print() on import; we drop that
# notice when it is the harmless "not installed" case and pass on anything else.
_WARP_NOTICE = re.compile(r"^Failed to import (warp|mujoco_warp): No module named '?warp")


@functools.cache
def _brax() -> Any:
    """Import brax quietly (once) and return `brax.io.mjcf`; import errors propagate."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            import mujoco.mjx  # noqa: F401  (the module whose import prints the Warp notice)
            from brax.io import mjcf
    finally:
        for line in buf.getvalue().splitlines():
            if _WARP_NOTICE.match(line):
                _log.debug("%s", line)
            elif line.strip():
                _log.warning("%s", line)
    return mjcf


def _asset(name: str) -> ET.Element:
    """Parse `brax/envs/assets/<name>.xml` from the installed brax package."""
    from importlib import resources

    _brax()
    return ET.fromstring((resources.files("brax") / "envs" / "assets" / f"{name}.xml").read_text())


class BraxGoalEnv(GoalEnv):
    """A brax robot behind the GoalEnv API; subclasses describe the model and the observation.

    The brax System is built on first use and cached on the instance (`env.sys`).
    """

    backend = "spring"
    asset: str = ""
    #: physics timestep (seconds) and sub-steps per env step; `control_period` is derived
    timestep: float = 0.005
    n_frames: int = 10
    #: actuator gears for the spring pipeline, in actuator order (None: the asset's). MuJoCo's
    #: own solver (mjx, native MuJoCo) always uses the asset's gears, which the spring
    #: pipeline's scaled masses would turn into a far stronger robot.
    spring_gear: tuple[float, ...] | None = None
    #: how `crl_distill.native` observes this robot in MuJoCo's C engine (None: not supported)
    native_observer: str | None = None

    @property
    def control_period(self) -> float:
        """Seconds of simulated time per env step: timestep x n_frames, multiplied in decimal.

        The decimal product of the two values as written (`repr`), so that 0.003 s x 10 is the
        0.03 a person reads and exported files record, not float's 0.030000000000000002; it
        differs from the float product by at most one rounding (~1e-17 s here).
        """
        return float(Decimal(repr(float(self.timestep))) * int(self.n_frames))

    # -- model ------------------------------------------------------------------------------
    def model_xml(self) -> str:
        """The one model definition both simulators read: the brax asset plus this env's edits,
        with every physics setting the env uses written into it (timestep, gears, and the
        frame skip as the custom numeric `crl_frame_skip`); nothing is overridden in code."""
        root = _asset(self.asset)
        self._edit_model(root)
        option = root.find("option")
        if option is None:
            option = ET.Element("option")
            root.insert(0, option)
        option.set("timestep", repr(self.timestep))
        if self.backend == "spring" and self.spring_gear is not None:
            motors = list(root.find("actuator"))
            if len(motors) != len(self.spring_gear):
                raise ValueError(f"{len(self.spring_gear)} gears for {len(motors)} actuators")
            for motor, gear in zip(motors, self.spring_gear, strict=True):
                motor.set("gear", repr(gear))
        custom = root.find("custom")
        if custom is None:
            custom = ET.SubElement(root, "custom")
        ET.SubElement(custom, "numeric", name="crl_frame_skip", data=str(self.n_frames))
        return ET.tostring(root, encoding="unicode")

    def _edit_model(self, root: ET.Element) -> None:
        """Hook: edit the parsed asset in place (add walls, ...)."""

    def _configure(self, sys: Any) -> Any:
        """Hook: adjust the loaded System. Physics settings belong in `model_xml` instead, so
        that native MuJoCo reads them too."""
        return sys

    def check_options(self) -> None:
        if "backend" in self.options:
            require_choice("backend", self.backend, ("spring", "mjx"))

    @property
    def jit_options(self) -> dict[str, Any]:
        # On CPU, XLA's newer fusion emitters turn MuJoCo's vmapped solver (mjx) into code
        # 70-600x slower (2 cores: 64 arm_reach envs run 2.6 instead of 1,640 env steps/s) that
        # also compiles ~2x longer; the spring pipeline runs the same speed either way.
        if self.backend == "mjx" and jax.default_backend() == "cpu":
            return {"xla_cpu_use_fusion_emitters": False}
        return {}

    def native_spec(self) -> dict[str, Any] | None:
        """What `crl_distill.native` needs to run this env in MuJoCo's C engine: the model, the
        frame skip, the observer and the termination range; None where it is not supported."""
        if self.native_observer is None:
            return None
        return {"env": self.name, "mjcf": self.model_xml(), "frame_skip": self.n_frames,
                "observer": self.native_observer, "backend": self.backend,
                "healthy_z_range": list(getattr(self, "healthy_z_range", ())) or None,
                "starts": self.native_starts(), "episode_length": self.episode_length,
                # sensor noise is sized per unit (crl_distill.perturb.SENSOR_NOISE)
                "state_units": list(self.state_units) or None}

    def native_starts(self) -> dict[str, Any] | None:
        """This env's start and goal distribution in numbers, for a controller that draws its own
        episodes in native MuJoCo (`crl_distill.native.NativeSim.reset`); None: not described."""
        return None

    @functools.cached_property
    def sys(self) -> Any:
        mjcf = _brax()
        # Build eagerly even when first touched inside jit/vmap tracing, so that the cached
        # System holds concrete arrays, never tracers.
        with jax.ensure_compile_time_eval(), warnings.catch_warnings():
            # brax.io.mjcf warns on every load that brax itself is in maintenance mode.
            warnings.filterwarnings("ignore", message="Brax System, pip", category=UserWarning)
            sys = mjcf.loads(self.model_xml())
            return self._configure(sys)

    @functools.cached_property
    def _pipeline(self) -> Any:
        return importlib.import_module(f"brax.{self.backend}.pipeline")

    def link_index(self, name: str) -> int:
        return self.sys.link_names.index(name)

    # -- physics ----------------------------------------------------------------------------
    def _physics_init(self, q: jax.Array, qd: jax.Array) -> Any:
        return self._pipeline.init(self.sys, q, qd)

    def _physics_step(self, ps: Any, ctrl: jax.Array) -> Any:
        def substep(s, _):
            return self._pipeline.step(self.sys, s, ctrl), None

        new, _ = jax.lax.scan(substep, ps, (), self.n_frames)
        # A blown-up simulation (non-finite q/qd) keeps its last finite state instead, so the
        # remaining steps of the episode, and the data trained on, stay finite.
        ok = jnp.isfinite(new.q).all() & jnp.isfinite(new.qd).all()
        return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, ps)

    # -- GoalEnv hooks ------------------------------------------------------------------------
    def _observe(self, ps: Any, ctrl: jax.Array | None) -> jax.Array:
        raise NotImplementedError

    def _ctrl(self, action: jax.Array) -> jax.Array:
        """Map an action in [-1, 1] to actuator controls."""
        return action

    def _finite(self, state_vec: jax.Array) -> jax.Array:
        return jnp.nan_to_num(state_vec, nan=0.0, posinf=1e6, neginf=-1e6).astype(jnp.float32)

    def state_at(self, q: jax.Array, qd: jax.Array, goal: jax.Array) -> EnvState:
        """An episode start built by hand: joint positions `q`, velocities `qd` (the model's
        q_size / qd_size) and a goal; jittable and vmappable (tests, demos, evaluation)."""
        ps = self._physics_init(jnp.asarray(q, jnp.float32), jnp.asarray(qd, jnp.float32))
        state_vec = self._finite(self._observe(ps, None))
        return self._pack(ps, state_vec, jnp.asarray(goal, jnp.float32), jnp.zeros((), jnp.int32),
                          jnp.zeros((), bool))

    def _step(self, sim, action):
        ctrl = self._ctrl(action)
        ps = self._physics_step(sim, ctrl)
        return ps, self._finite(self._observe(ps, ctrl))


class _HealthyTorso:
    """Early termination as in the paper: the episode ends when the torso's height (state[2],
    the free joint's z) leaves `healthy_z_range`."""

    healthy_z_range: tuple[float, float]

    @property
    def termination(self) -> str:
        lo, hi = self.healthy_z_range
        return f"torso z outside [{lo:g}, {hi:g}] m"

    def _terminated(self, sim, state_vec):
        lo, hi = self.healthy_z_range
        return (state_vec[2] < lo) | (state_vec[2] > hi)


class _MazeMixin:
    """The paper's start and goal cells of a `mazes.PAPER_LAYOUTS` maze, cell (i, j) centred at
    (i, j) * cell_size, walled by `mjcf.add_maze_walls`; option `goals=free` draws start and
    goal from two different free cells.

    Put it before the robot class (`class AntMaze(_MazeMixin, Ant)`): a maze env's options are
    the robot's (`backend`, ...) plus `maze_options`, less `excluded_options`.
    """

    maze: str
    cell_size: float
    wall_height: float
    #: names of the robot geoms that collide with walls; None: every robot geom
    wall_geoms: tuple[str, ...] | None = None
    #: mjx broad phase: robot-wall pairs kept per geom-type group
    max_geom_pairs: int
    goals: str = "paper"
    #: the maze's own options, added to the robot's
    maze_options: dict[str, type] = {"goals": str}
    #: robot options that mean nothing in a maze -> why (`make` says so when one is given)
    excluded_options: dict[str, str] = {
        "goal_dist": "a maze's goals are its cells, chosen by goals=paper|free, not a distance",
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "options" not in cls.__dict__:
            # The robot's options: the next class after this mixin in cls's MRO (a plain dict
            # per class, as every env's `options` is).
            robot = super().options
            cls.options = {**{k: t for k, t in robot.items() if k not in cls.excluded_options},
                           **cls.maze_options}

    def _init_maze(self, robot: str, maze: str) -> None:
        if maze not in PAPER_LAYOUTS:
            raise ValueError(f"unknown maze {maze!r}; valid: {', '.join(PAPER_LAYOUTS)}")
        self.maze = maze
        self.name = f"{robot}_{maze.removesuffix('_eval')}_maze" + ("_eval" if maze.endswith("_eval") else "")

    def check_options(self) -> None:
        require_choice("goals", self.goals, ("paper", "free"))
        super().check_options()

    def _edit_model(self, root: ET.Element) -> None:
        super()._edit_model(root)
        add_maze_walls(root, PAPER_LAYOUTS[self.maze], self.cell_size, self.wall_height,
                       self.wall_geoms, self.max_geom_pairs)  # fmt: skip

    def native_starts(self) -> None:
        return None  # maze cells, not the open-floor robot's rule

    @property
    def goal_distribution(self) -> str:
        if self.goals == "free":
            return "start and goal: centres of two different free cells"
        n = len(marked_cells(PAPER_LAYOUTS[self.maze], "g"))
        return f"start: the maze's start cell; goal: one of its {n} goal cells (paper)"

    def _centres(self, cells: np.ndarray) -> jax.Array:
        return jnp.asarray(cells.astype(np.float32) * self.cell_size)

    def _start_and_goal(self, key):
        layout = PAPER_LAYOUTS[self.maze]
        k_start, k_goal = jax.random.split(key)
        if self.goals == "free":
            centres = self._centres(free_cells(layout))
            n = centres.shape[0]
            i_start = jax.random.randint(k_start, (), 0, n)
            i_goal = jax.random.randint(k_goal, (), 0, n - 1)
            return centres[i_start], centres[i_goal + (i_goal >= i_start)]
        starts = self._centres(marked_cells(layout, "r"))
        goals = self._centres(marked_cells(layout, "g"))
        return (starts[jax.random.randint(k_start, (), 0, starts.shape[0])],
                goals[jax.random.randint(k_goal, (), 0, goals.shape[0])])

    def is_wall(self, xy: jax.Array) -> jax.Array:
        """[..., 2] world x-y -> [...] bool, True inside a wall cell (outside the grid counts)."""
        walls = wall_grid(PAPER_LAYOUTS[self.maze])
        row = jnp.floor(xy[..., 0] / self.cell_size + 0.5).astype(jnp.int32)
        col = jnp.floor(xy[..., 1] / self.cell_size + 0.5).astype(jnp.int32)
        h, w = walls.shape
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        return ~inside | jnp.asarray(walls)[jnp.clip(row, 0, h - 1), jnp.clip(col, 0, w - 1)]


__all__ = ["BraxGoalEnv"]
