"""Brax robots as goal-conditioned environments: reacher, ant, humanoid, and their mazes.

Observation layouts, goal sampling, physics settings (spring pipeline, timesteps, sub-steps,
gears) and episode lengths follow the public JaxGCRL / scaling-crl goal-conditioned suite
(reimplemented here, not copied):

=========  =====================================================================  ============
env        state                                                                  goal
=========  =====================================================================  ============
reacher    cos(q0,q1), sin(q0,q1), fingertip x,y,z, fingertip velocity (10)        target x,y,z
ant        15 qpos (torso x,y,z, quat, 8 joints) + 14 qvel (29)                   target x,y
humanoid   24 qpos + 23 qvel + 11x10 com inertia + 11x6 com velocity + 23          target x,y,z
           actuator torques (246)                                                 (z = 1.25)
=========  =====================================================================  ============

Goals: reacher, a uniform angle and a radius uniform in [0, 0.2]; ant, 10 m away in a uniform
direction (`ant:goal_dist=D` for another distance); humanoid, 1-5 m away (uniform distance,
so not uniform over the annulus), z = 1.25; mazes, the paper's: the start cell ('r', plus the
ant's 0.1 reset noise) and a goal drawn from the maze's goal cells ('g'), see `mazes.PAPER_LAYOUTS`
(`<maze env>:goals=free` draws start and goal from all free cells instead, an easier task).

Time per env step and early termination are the paper's as its code runs on brax 0.10.1:
reacher 0.04 s, ant and ant mazes 0.005 s x 10 = 0.05 s, humanoid 0.003 s x 10 = 0.03 s,
humanoid mazes 0.0015 s x 10 = 0.015 s (the reference's `opt.timestep` edits for reacher and
humanoid do not reach that brax's spring dt, so its envs run on the asset timesteps). The
reference integrates the reacher at 0.01 s x 4, which diverges in the brax we use (all of 64
envs within 200 steps, even with zero action); ours takes 0.005 s x 8 for the same 0.04 s. The ant
ends its episode when its torso z leaves [0.2, 1.0] m, the humanoid when it leaves [1.0, 2.0] m.

Robot models are read at run time from brax's own installed assets (`brax/envs/assets/*.xml`)
and edited with ElementTree before `brax.io.mjcf.loads`; nothing is copied into this repo.
Physics is built lazily, on the first reset/step (or `env.sys`), so the static attributes are
available without importing brax at all.

Mazes: cell (row i, col j) is centred at world (x, y) = (i, j) * cell_size, as in the paper's
code; one box per wall cell that a robot can reach, half a cell high (ant 2 m, humanoid 1 m)
and `_WALL_DEPTH` below the floor. As in the paper, walls collide with the ant's torso, hip
capsules and feet and with every humanoid geom. mjx's `max_geom_pairs` broad phase keeps only
the nearest robot-wall pairs, so the cost per step does not grow with the maze.

Deliberate differences from the reference suite:

* The humanoid has no "target" body, so the goal is not leaked into the state: the reference
  state (268) also carries the target's two slide joints, its link and its joint torques. A
  reference humanoid checkpoint therefore does not fit these envs (the importer refuses it).
* The reacher's fingertip velocity is the true world-frame velocity of the fingertip point.
* Maze walls also reach `_WALL_DEPTH` below the floor (the paper's stop at it), so nothing slips
  under them; above the floor they are the paper's.
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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill.envs.base import EnvState, GoalEnv
from crl_distill.envs.mazes import PAPER_LAYOUTS, free_cells, marked_cells, wall_grid
from crl_distill.errors import require_choice

_log = logging.getLogger(__name__)

# mujoco.mjx's optional Warp backend announces its absence with print() on import; we drop that
# notice when it is the harmless "not installed" case and pass on anything else.
_WARP_NOTICE = re.compile(r"^Failed to import (warp|mujoco_warp): No module named '?warp")

# Contact bits. A pair collides when contype(a) & conaffinity(b) or contype(b) & conaffinity(a).
# The floor is contype 0 / conaffinity 1 and robot geoms that touch it have contype 1. Walls are
# contype 2 / conaffinity 0 and the robot geoms chosen to hit walls get conaffinity bit 2 added,
# so walls touch exactly those geoms and no new robot-robot or robot-floor pairs appear.
_WALL_CONTYPE, _WALL_CONAFFINITY, _WALL_BIT = "2", "0", 2
#: walls also reach this far below the floor: only the ant's feet touch the floor, so a flipped
#: ant's torso can sink below it (by up to ~0.5 m), and must not slip under a wall there.
_WALL_DEPTH = 1.0


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


def _set_first_numeric(root: ET.Element, name: str, data: str) -> None:
    """Make `<numeric name=... data=.../>` the first custom numeric of the model.

    mjx (3.17) reads single-value numerics such as `max_geom_pairs` as `numeric_data[id]`, i.e.
    by the numeric's index rather than its data address; the two agree only for the first one.
    """
    custom = root.find("custom")
    if custom is None:
        custom = ET.SubElement(root, "custom")
    for el in custom.findall("numeric"):
        if el.get("name") == name:
            custom.remove(el)
    custom.insert(0, ET.Element("numeric", name=name, data=data))


def _geom_default(root: ET.Element, geom: ET.Element, attr: str) -> int:
    """An int geom attribute: the geom's own, else the top-level <default>'s, else MuJoCo's (1)."""
    if attr in geom.attrib:
        return int(geom.get(attr))
    default = root.find("default/geom")
    return int(default.get(attr, 1)) if default is not None else 1


def add_maze_walls(
    root: ET.Element,
    layout: tuple[str, ...],
    cell_size: float,
    wall_height: float,
    wall_geoms: tuple[str, ...] | None,
    max_geom_pairs: int,
) -> int:
    """Add one box per reachable wall cell to `root`'s worldbody; return the number of boxes.

    Cell (i, j) is centred at world (x, y) = (i, j) * cell_size (the paper's convention).
    wall_geoms: names of the robot's geoms that collide with walls; None for every robot geom.
    Wall cells with no free cell among their 8 neighbours can never be touched and are left
    out. `max_geom_pairs` makes mjx keep only the nearest robot-wall pairs (by bounding-sphere
    distance) per geom-type group, so the contact cost does not grow with the maze's size.
    """
    walls = wall_grid(layout)
    free = ~walls
    worldbody = root.find("worldbody")
    half = cell_size / 2
    half_z = (wall_height + _WALL_DEPTH) / 2
    mid_z = (wall_height - _WALL_DEPTH) / 2
    n = 0
    for i, j in np.argwhere(walls):
        if not free[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].any():
            continue
        ET.SubElement(
            worldbody,
            "geom",
            name=f"wall_{i}_{j}",
            type="box",
            pos=f"{i * cell_size} {j * cell_size} {mid_z}",
            size=f"{half} {half} {half_z}",
            contype=_WALL_CONTYPE,
            conaffinity=_WALL_CONAFFINITY,
            rgba="0.7 0.5 0.3 1",
        )
        n += 1
    robot = worldbody.find("body")
    found = set()
    for geom in robot.iter("geom"):
        if wall_geoms is None or geom.get("name") in wall_geoms:
            geom.set("conaffinity", str(_geom_default(root, geom, "conaffinity") | _WALL_BIT))
            found.add(geom.get("name"))
    if missing := set(wall_geoms or ()) - found:
        raise ValueError(f"robot has no geoms named {sorted(missing)}")
    _set_first_numeric(root, "max_geom_pairs", str(max_geom_pairs))
    return n


class BraxGoalEnv(GoalEnv):
    """A brax robot behind the GoalEnv API; subclasses describe the model and the observation.

    The brax System is built on first use and cached on the instance (`env.sys`).
    """

    backend = "spring"
    asset: str = ""
    #: physics timestep (seconds) and sub-steps per env step: control_period = timestep * n_frames.
    timestep: float = 0.005
    n_frames: int = 10
    #: actuator gears for the spring pipeline, in actuator order (None: the asset's). MuJoCo's
    #: own solver (mjx, native MuJoCo) always uses the asset's gears, which the spring
    #: pipeline's scaled masses would turn into a far stronger robot.
    spring_gear: tuple[float, ...] | None = None
    #: how `crl_distill.native` observes this robot in MuJoCo's C engine (None: not supported)
    native_observer: str | None = None

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
                "starts": self.native_starts()}

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


# ==========================================================================================
# Reacher
# ==========================================================================================


class Reacher(BraxGoalEnv):
    """Two-link planar arm; the goal is the target position, achieved by the fingertip."""

    name = "reacher"
    state_size = 10
    state_names = ("cos_q0", "cos_q1", "sin_q0", "sin_q1", "tip_x", "tip_y", "tip_z",
                   "tip_vx", "tip_vy", "tip_vz")
    state_units = ("1",) * 4 + ("m",) * 3 + ("m/s",) * 3
    action_names = ("joint0_torque", "joint1_torque")
    goal_indices = (4, 5, 6)
    action_size = 2
    episode_length = 1000
    success_threshold = 0.05
    backend = "spring"
    asset = "reacher"
    #: the paper's 0.04 s per env step; it integrates at 0.01 s x 4, which diverges in current
    #: brax's spring pipeline (every env, even under zero action), so we take 8 steps of 0.005 s
    timestep = 0.005
    n_frames = 8
    control_period = 0.04
    goal_distribution = "target uniform in angle, radius uniform in [0, 0.2] m"
    layout = (
        "state = cos(q0,q1), sin(q0,q1), fingertip x,y,z, fingertip vel x,y,z; "
        "goal = target x,y,z; goal_indices 4:7"
    )
    #: fingertip offset in the second link's frame (the asset's fused `fingertip` body)
    tip_offset = (0.11, 0.0, 0.0)
    spring_gear = (25.0, 25.0)  # as in the reference
    target_radius = 0.2
    native_observer = "reacher"
    #: start: joint angles qpos0 + U(-q_noise, q_noise), velocities U(-qd_noise, qd_noise)
    reset_q_noise = 0.1
    reset_qd_noise = 0.005
    #: `reacher:backend=mjx` simulates with MuJoCo's own solver (and the asset's gears), the
    #: physics a native MuJoCo controller meets
    options = {"backend": str}

    def _tip(self, ps) -> tuple[jax.Array, jax.Array]:
        link = self.link_index("body1")
        x = ps.x.take(link)
        offset = jnp.asarray(self.tip_offset)
        from brax import math

        arm = math.rotate(offset, x.rot)
        pos = x.pos + arm
        vel = ps.xd.vel[link] + jnp.cross(ps.xd.ang[link], arm)
        return pos, vel

    def _observe(self, ps, ctrl):
        theta = ps.q[:2]
        pos, vel = self._tip(ps)
        return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), pos, vel])

    def _reset(self, key):
        k_q, k_qd, k_r, k_a = jax.random.split(key, 4)
        sys = self.sys
        qn, qdn = self.reset_q_noise, self.reset_qd_noise
        q = sys.init_q + jax.random.uniform(k_q, (sys.q_size(),), minval=-qn, maxval=qn)
        qd = jax.random.uniform(k_qd, (sys.qd_size(),), minval=-qdn, maxval=qdn)
        # Target on a random disc point of radius <= 0.2 (the target's two slide joints).
        r = self.target_radius * jax.random.uniform(k_r)
        ang = 2.0 * jnp.pi * jax.random.uniform(k_a)
        q = q.at[2:].set(jnp.stack([r * jnp.cos(ang), r * jnp.sin(ang)]))
        qd = qd.at[2:].set(0.0)
        ps = self._physics_init(q, qd)
        goal = ps.x.pos[self.link_index("target")]
        return ps, self._finite(self._observe(ps, None)), goal

    def native_starts(self) -> dict[str, Any]:
        return {"rule": "reacher", "q_noise": self.reset_q_noise, "qd_noise": self.reset_qd_noise,
                "target_radius": self.target_radius, "goal_body": "target"}


# ==========================================================================================
# Ant
# ==========================================================================================


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
    control_period = 0.05
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


class _MazeMixin:
    """The paper's start and goal cells of a `mazes.PAPER_LAYOUTS` maze, cell (i, j) centred at
    (i, j) * cell_size; option `goals=free` draws start and goal from two different free cells."""

    maze: str
    cell_size: float
    goals: str = "paper"
    options = {"goals": str}

    def _init_maze(self, robot: str, maze: str) -> None:
        if maze not in PAPER_LAYOUTS:
            raise ValueError(f"unknown maze {maze!r}; valid: {', '.join(PAPER_LAYOUTS)}")
        self.maze = maze
        self.name = f"{robot}_{maze.removesuffix('_eval')}_maze" + ("_eval" if maze.endswith("_eval") else "")

    def check_options(self) -> None:
        require_choice("goals", self.goals, ("paper", "free"))

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

    def _edit_model(self, root):
        add_maze_walls(root, PAPER_LAYOUTS[self.maze], self.cell_size, self.wall_height,
                       self.wall_geoms, self.max_geom_pairs)  # fmt: skip

    def native_starts(self) -> None:
        return None  # maze cells, not the open-floor ant's rule


# ==========================================================================================
# Humanoid
# ==========================================================================================


class Humanoid(_HealthyTorso, BraxGoalEnv):
    """Humanoid; the goal is a torso x-y-z position 1-5 m away at standing height 1.25 m."""

    name = "humanoid"
    state_size = 246
    goal_indices = (0, 1, 2)
    action_size = 17
    episode_length = 1000
    success_threshold = 0.5
    backend = "spring"
    asset = "humanoid"
    timestep = 0.003
    n_frames = 10
    control_period = 0.03
    healthy_z_range = (1.0, 2.0)
    reference_state_size = 268  # + the target's 2 slide joints, its link and its joint torques
    goal_distribution = "1-5 m from the start (uniform distance and direction), z = 1.25 m"
    layout = (
        "state = 24 qpos (torso x,y,z first) + 23 qvel + 11x10 com inertia + 11x6 com velocity "
        "+ 23 actuator torques; goal = target x,y,z (z = 1.25); goal_indices 0:3"
    )
    target_z = 1.25
    goal_range = (1.0, 5.0)
    #: spring-pipeline actuator gears (11 abdomen/leg motors, 6 arm motors), as in the reference
    spring_gear = (350.0,) * 11 + (100.0,) * 6

    def _edit_model(self, root):
        # As in the reference, every body geom touches the floor (brax's asset: only the feet),
        # so a fallen humanoid lies on the floor instead of sinking through it.
        for geom in root.find("worldbody/body").iter("geom"):
            geom.set("contype", "1")

    def _ctrl(self, action):
        lo, hi = self.sys.actuator.ctrl_range[:, 0], self.sys.actuator.ctrl_range[:, 1]
        return lo + (action + 1.0) * 0.5 * (hi - lo)

    def _observe(self, ps, ctrl):
        from brax import actuator, base

        sys = self.sys
        inertia = sys.link.inertia
        # The spring pipeline simulates scaled masses/inertias; observe what it simulates.
        diag = jnp.diagonal(inertia.i, axis1=-2, axis2=-1) ** (1 - sys.spring_inertia_scale)
        inertia = inertia.replace(
            i=jax.vmap(jnp.diag)(diag), mass=inertia.mass ** (1 - sys.spring_mass_scale)
        )
        mass = inertia.mass
        total = jnp.sum(mass)
        x_i = ps.x.vmap().do(inertia.transform)  # each link's centre-of-mass frame, world
        com = jnp.sum(mass[:, None] * x_i.pos, axis=0) / total
        cinr = x_i.replace(pos=x_i.pos - com).vmap().do(inertia)
        com_inertia = jnp.concatenate([cinr.i.reshape(mass.shape[0], 9), mass[:, None]], axis=1)
        xd_i = base.Transform.create(pos=x_i.pos - ps.x.pos).vmap().do(ps.xd)
        com_vel = jnp.concatenate([mass[:, None] * xd_i.vel / total, xd_i.ang], axis=1)
        if ctrl is None:
            ctrl = jnp.zeros(sys.act_size())
        torque = actuator.to_tau(sys, ctrl, ps.q, ps.qd)
        return jnp.concatenate([ps.q, ps.qd, com_inertia.ravel(), com_vel.ravel(), torque])

    def _start_and_goal(self, key):
        k_d, k_a = jax.random.split(key)
        dist = jax.random.uniform(k_d, minval=self.goal_range[0], maxval=self.goal_range[1])
        ang = 2.0 * jnp.pi * jax.random.uniform(k_a)
        return jnp.zeros(2), jnp.stack([dist * jnp.cos(ang), dist * jnp.sin(ang)])

    def _reset(self, key):
        sys = self.sys
        start, goal_xy = self._start_and_goal(key)
        q = sys.init_q.at[:2].add(start)  # no reset noise (as in the reference)
        ps = self._physics_init(q, jnp.zeros(sys.qd_size()))
        goal = jnp.concatenate([goal_xy, jnp.array([self.target_z])])
        return ps, self._finite(self._observe(ps, None)), goal


class HumanoidMaze(_MazeMixin, Humanoid):
    """The humanoid in a maze of 2 m cells; walls 1 m high collide with every humanoid geom
    (as in the paper's model). Its dt is half the open humanoid's, as in the paper's code."""

    cell_size = 2.0
    wall_height = 1.0  # the paper's: half a cell
    timestep = 0.0015
    control_period = 0.015
    #: per geom-type group; the humanoid's ~13 capsules can touch a few wall cells at once
    max_geom_pairs = 24

    def __init__(self, maze: str):
        self._init_maze("humanoid", maze)
        self.layout = (
            "state = 24 qpos (torso x,y,z first) + 23 qvel + 11x10 com inertia + 11x6 com "
            f"velocity + 23 actuator torques; goal = target x,y,z (z = 1.25; maze '{maze}', "
            f"{self.cell_size:g} m cells); goal_indices 0:3"
        )

    def _edit_model(self, root):
        super()._edit_model(root)
        add_maze_walls(root, PAPER_LAYOUTS[self.maze], self.cell_size, self.wall_height,
                       None, self.max_geom_pairs)  # fmt: skip


# ==========================================================================================
# Registry entry point
# ==========================================================================================

#: the paper's ant mazes (each with its far-goals `_eval` variant) and humanoid mazes
ANT_MAZES = ("u", "u2", "u3", "u4", "u5", "u6", "u7", "big", "hardest")
ANT_EVAL_MAZES = ("u", "u2", "u3", "u4", "u5", "u6", "u7", "big")
HUMANOID_MAZES = ("u", "big", "hardest")

_MAKERS = {
    "reacher": Reacher,
    "ant": Ant,
    **{f"ant_{m}_maze": functools.partial(AntMaze, m) for m in ANT_MAZES},
    **{f"ant_{m}_maze_eval": functools.partial(AntMaze, f"{m}_eval") for m in ANT_EVAL_MAZES},
    "humanoid": Humanoid,
    **{f"humanoid_{m}_maze": functools.partial(HumanoidMaze, m) for m in HUMANOID_MAZES},
}

NAMES = tuple(_MAKERS)


def make_brax_env(name: str) -> GoalEnv:
    """Build the brax environment `name` (no physics is built until first use)."""
    try:
        return _MAKERS[name]()
    except KeyError:
        raise ValueError(f"unknown brax environment {name!r}; valid: {', '.join(NAMES)}") from None
