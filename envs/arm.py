"""Robot-arm manipulation tasks: a Franka-Panda-like arm on a table, as goal-conditioned envs.

The four arm tasks of the public scaling-crl suite, reimplemented (not copied) on our own MJCF
model built from primitives (`assets/arm_panda.xml`, no meshes), simulated with MuJoCo through
brax's `mjx` pipeline at 0.002 s x 25 sub-steps = 0.05 s per env step (Newton solver, 6
iterations, 12 line-search iterations, implicit-fast integration, as in the reference).

================  ==========================================================  ===============
env               state                                                       goal
================  ==========================================================  ===============
arm_reach         7 joint angles, end-effector x,y,z, end-effector vel (13)   end effector xyz
arm_push_easy     cube x,y,z, 7 joint angles, end-effector x,y,z,             cube x,y,z
arm_push_hard     end-effector vel x,y,z, finger distance (17)
arm_binpick_hard
================  ==========================================================  ===============

The end effector is the flange (`link7`'s frame origin; the hand frame sits 0.107 m further
along the flange's z axis), and its velocity is that point's world-frame linear velocity; the
finger distance is the distance between the two finger frames (0 closed, 0.16 m fully open).
Success: goal distance < 0.1 m.

Actions, in [-1, 1]: joint targets for joints 1, 2, 4 and 6, mapped linearly onto
[0.3491, 2.7925], [0, 1.48353], [-3.0718, -0.0698] and [2.3562, 3.7525] rad (joints 3 and 5 are
held at 0 and joint 7 at 1.4487 rad), plus, except for reaching, a binary gripper command
(> 0 closes the fingers fully, <= 0 opens them fully). The targets drive affine position servos
with the reference's gains; for joints 3-7 the servo gain is below its stiffness (joints 3-4:
2000 vs 3500, joints 5-7: 1000 vs 2000), so those joints settle near 0.57x (joint 4) and 0.5x
(joints 6, 7) of the commanded target. The arm joints themselves have no armature or damping
and joints 1, 3, 5 and 7 no limits: the reference's XML asks for them through a default class
that brax's body fusing detaches, so its tasks run without them. Both are the reference's
behaviour as it runs, kept on purpose: a policy trained here drives the arm as one trained there
would. Checked by replaying the same actions in both: 40 random-action steps give the same
observations to 4 decimals; scripted push-easy and bin-pick episodes replayed open loop end
at the same goal distance (to 1e-4 m).

Starts and goals (uniform in boxes; the arm always starts at the same pose,
q = [1.571, 0.742, 0, -1.571, 0, 3.054, 1.449], fingers 0.04 m open each):

* arm_reach: goal (0, 0.5, 0.3) +- 0.2 in x, y and z.
* arm_push_easy: cube (-0.1, 0.6) +- 0.1, goal (0.1, 0.6, 0.03) +- 0.1 in x, y.
* arm_push_hard: cube (-0.25, 0.65) +- 0.25, goal (0.25, 0.65, 0.03) +- 0.25 in x, y.
* arm_binpick_hard: cube (-0.3, 0.6) +- 0.15 inside the left bin, goal (0.3, 0.6, 0.03) +- 0.15
  inside the right bin; bins are 0.38 m square with 0.066 m walls that collide with the cube,
  the fingers and the hand (contact impedance ratio 10, as in the reference).

Episodes never terminate early and last 1000 steps, the episode length the reference's
train.py uses for every task (its arm env files "recommend" 50 steps for reach and push-easy and
80 for push-hard and binpick-hard, a value that only scales an unobserved timer there).

Deliberate differences from the reference suite:

* The cube starts at rest on the table (z = 0.03); the reference drops it from z = 0.07, so its
  first observations show a falling cube.
* No "goal marker" body: the reference carries a massless free-floating goal marker (visual
  only) in the simulator state; here the goal lives only in the observation.
* Visual geometry is coarse capsules; every collision geom (hand capsule, finger boxes, cube,
  table, bin walls), contact pair and inertial parameter is the reference's. The hand's own
  geometry adds no mass, as in the reference once brax fuses the hand into link 7.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp

from crl_distill.envs.base import GoalEnv
from crl_distill.envs.brax_base import BraxGoalEnv

#: the arm's start pose (joints 1-7, rad) in every task, as in the reference
ARM_START = (1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449)
#: each finger's start opening (m); 0.08 is fully open
FINGER_START = 0.04
#: joint-target range per arm joint (rad) that actions in [-1, 1] map onto; joints 3, 5 and 7
#: are fixed (equal bounds), so only joints 1, 2, 4 and 6 take actions.
TARGET_LO = (0.3491, 0.0, 0.0, -3.0718, 0.0, 2.3562, 1.4487)
TARGET_HI = (2.7925, 1.48353, 0.0, -0.0698, 0.0, 3.7525, 1.4487)
#: arm joints (0-based) driven by the first four action components
ACTED_JOINTS = (0, 1, 3, 5)
#: finger servo controls: 0 drives both fingers shut, 255 fully open (0.08 m each)
GRIPPER_CLOSED, GRIPPER_OPEN = 0.0, 255.0
CUBE_HALF = 0.03
TABLE_Z = 0.0

_PAIR_FRICTION = "1 1 0.005 0.0001 0.0001"


def _model_root() -> ET.Element:
    """Our arm model, parsed (`envs/assets/arm_panda.xml`, installed as package data)."""
    return ET.fromstring((resources.files("crl_distill.envs") / "assets" / "arm_panda.xml").read_text())


def _remove(root: ET.Element, path: str, name: str) -> None:
    """Remove the element named `name` under `path` (its parent is found by search)."""
    for parent in root.iter():
        for child in list(parent):
            if child.tag == path and child.get("name") == name:
                parent.remove(child)
                return
    raise ValueError(f"no <{path} name={name!r}> in the arm model")


def _region_marker(worldbody: ET.Element, name: str, centre: tuple[float, float], half: float,
                   rgba: str) -> None:
    """A flat, non-colliding square on the table showing where starts or goals are drawn."""
    ET.SubElement(worldbody, "geom", name=name, type="box", pos=f"{centre[0]} {centre[1]} 0.0005",
                  size=f"{half} {half} 0.0005", contype="0", conaffinity="0", rgba=rgba)


class ArmEnv(BraxGoalEnv):
    """Base class of the arm tasks (see the module docstring); subclasses set the task."""

    backend = "mjx"
    timestep = 0.002
    n_frames = 25
    episode_length = 1000
    success_threshold = 0.1
    termination = "none"
    #: the gripper-less reach task overrides these
    has_gripper = True
    has_cube = True
    state_size = 17
    goal_indices = (0, 1, 2)
    action_size = 5
    layout = (
        "state = cube x,y,z, 7 joint angles, end-effector (flange) x,y,z, end-effector vel x,y,z, "
        "finger distance; goal = cube x,y,z; goal_indices 0:3"
    )
    #: task geometry: the cube's start centre (x, y) and uniform half-width, the goal's centre
    #: (x, y, z) and uniform half-width in x and y (z is fixed at the resting cube's height).
    cube_centre: tuple[float, float] = (-0.1, 0.6)
    cube_noise: float = 0.1
    goal_centre: tuple[float, float, float] = (0.1, 0.6, 0.03)
    goal_noise: float = 0.1
    impratio: float = 1.0
    goal_distribution = "cube (-0.1, 0.6) +- 0.1 m in x, y; goal (0.1, 0.6, 0.03) +- 0.1 m in x, y (uniform)"

    # -- model ------------------------------------------------------------------------------
    def model_xml(self) -> str:
        """Our MJCF (`assets/arm_panda.xml`) with this task's edits."""
        root = _model_root()
        option = root.find("option")
        option.set("timestep", str(self.timestep))
        if self.impratio != 1.0:
            option.set("impratio", str(self.impratio))
        self._edit_model(root)
        return ET.tostring(root, encoding="unicode")

    def _edit_model(self, root: ET.Element) -> None:
        worldbody = root.find("worldbody")
        _region_marker(worldbody, "start_region", self.cube_centre, self.cube_noise, "0.1 0.3 0.9 1")
        _region_marker(worldbody, "goal_region", self.goal_centre[:2], self.goal_noise, "0.9 0.1 0.1 1")

    @property
    def _arm_q(self) -> slice:
        """Position of the 7 arm joints in q: after the cube's free joint (7) when there is one."""
        return slice(7, 14) if self.has_cube else slice(0, 7)

    # -- physics ------------------------------------------------------------------------------
    def _ctrl(self, action: jax.Array) -> jax.Array:
        """[action_size] in [-1, 1] -> actuator controls [7 (+2 fingers)].

        Absolute (not delta) joint targets: the reference's `delta_control=False` mapping.
        """
        lo, hi = jnp.asarray(TARGET_LO), jnp.asarray(TARGET_HI)
        scaled = jnp.zeros(7).at[jnp.asarray(ACTED_JOINTS)].set(action[:4])
        targets = (lo + hi) / 2 + scaled * (hi - lo) / 2
        if not self.has_gripper:
            return targets
        grip = jnp.where(action[4] > 0, GRIPPER_CLOSED, GRIPPER_OPEN)
        return jnp.concatenate([targets, jnp.stack([grip, grip])])

    def _observe(self, ps: Any, ctrl: jax.Array | None) -> jax.Array:
        """Physics state -> state vector [state_size] (layout in the module docstring)."""
        eef = self.link_index("link7")
        parts = [ps.q[self._arm_q], ps.x.pos[eef], ps.xd.vel[eef]]
        if self.has_cube:
            left, right = self.link_index("left_finger"), self.link_index("right_finger")
            fingers = jnp.linalg.norm(ps.x.pos[right] - ps.x.pos[left])[None]
            parts = [ps.q[:3], *parts, fingers]
        return jnp.concatenate(parts)

    def start_q(self, cube_xy: jax.Array | None = None) -> jax.Array:
        """[q_size] the start pose with the cube (if any) resting at `cube_xy` [2]."""
        arm = jnp.asarray(ARM_START)
        if not self.has_cube:
            return arm
        cube = jnp.concatenate([jnp.asarray(cube_xy), jnp.array([TABLE_Z + CUBE_HALF, 1.0, 0.0, 0.0, 0.0])])
        fingers = jnp.full(2, FINGER_START) if self.has_gripper else jnp.zeros(0)
        return jnp.concatenate([cube, arm, fingers])

    def sample_start(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """key -> (q [q_size] start pose, goal [3]); pure, builds no physics (tests, host sims)."""
        k_cube, k_goal = jax.random.split(key)
        cube_xy = jnp.asarray(self.cube_centre) + self.cube_noise * jax.random.uniform(
            k_cube, (2,), minval=-1.0
        )
        # Goals vary in x and y only; z is the height of a cube resting on the table.
        half = jnp.array([self.goal_noise, self.goal_noise, 0.0])
        goal = jnp.asarray(self.goal_centre) + half * jax.random.uniform(k_goal, (3,), minval=-1.0)
        return self.start_q(cube_xy), goal

    def _reset(self, key):
        q, goal = self.sample_start(key)
        # The reference starts every episode at rest (zero velocities), without arm noise.
        ps = self._physics_init(q, jnp.zeros(self.sys.qd_size()))
        return ps, self._finite(self._observe(ps, None)), goal


class ArmReach(ArmEnv):
    """Move the flange to a goal point; no gripper, no cube (4 actions, state 13)."""

    name = "arm_reach"
    has_gripper = False
    has_cube = False
    state_size = 13
    goal_indices = (7, 8, 9)
    action_size = 4
    layout = (
        "state = 7 joint angles, end-effector (flange) x,y,z, end-effector vel x,y,z; "
        "goal = end-effector x,y,z; goal_indices 7:10"
    )
    goal_centre = (0.0, 0.5, 0.3)
    goal_noise = 0.2
    goal_distribution = "flange goal (0, 0.5, 0.3) +- 0.2 m in x, y and z (uniform); fixed arm start"

    def _edit_model(self, root):
        # The reach arm ends at the hand: no fingers, no cube, and only the hand touches the table.
        for body in ("left_finger", "right_finger", "cube"):
            _remove(root, "body", body)
        for act in ("act_left", "act_right"):
            _remove(root, "general", act)
        root.remove(root.find("equality"))
        for pair in list(root.find("contact")):
            if pair.get("name") != "table_hand":
                root.find("contact").remove(pair)
        c, h = self.goal_centre, self.goal_noise
        ET.SubElement(root.find("worldbody"), "geom", name="goal_region", type="box",
                      pos=f"{c[0]} {c[1]} {c[2]}", size=f"{h} {h} {h}", contype="0",
                      conaffinity="0", rgba="0.9 0.1 0.1 0.15")

    def sample_start(self, key):
        goal = jnp.asarray(self.goal_centre) + self.goal_noise * jax.random.uniform(key, (3,), minval=-1.0)
        return self.start_q(), goal


class ArmPushEasy(ArmEnv):
    """Push the cube from a small square to the adjacent one (start and goal +- 0.1 m)."""

    name = "arm_push_easy"


class ArmPushHard(ArmEnv):
    """Push the cube from the left half of a 1 m x 0.5 m area to its right half (+- 0.25 m)."""

    name = "arm_push_hard"
    cube_centre = (-0.25, 0.65)
    cube_noise = 0.25
    goal_centre = (0.25, 0.65, 0.03)
    goal_noise = 0.25
    goal_distribution = "cube (-0.25, 0.65) +- 0.25 m, goal (0.25, 0.65, 0.03) +- 0.25 m in x, y (uniform)"


class ArmBinpickHard(ArmEnv):
    """Carry the cube from anywhere in the left bin to anywhere in the right bin (+- 0.15 m)."""

    name = "arm_binpick_hard"
    cube_centre = (-0.3, 0.6)
    cube_noise = 0.15
    goal_centre = (0.3, 0.6, 0.03)
    goal_noise = 0.15
    goal_distribution = "cube (-0.3, 0.6) +- 0.15 m (left bin), goal (0.3, 0.6, 0.03) +- 0.15 m (right bin)"
    impratio = 10.0
    #: bin centres (x, y); each bin is four walls, 0.066 m high, 0.01 m thick, inner half-width
    #: 0.185 m, so a cube centre drawn within +- 0.15 m always fits inside.
    bins = ((-0.3, 0.6), (0.3, 0.6))
    wall_height = 0.066
    wall_half_thickness = 0.005
    wall_offset = 0.19  # wall centre-line distance from the bin centre

    def _edit_model(self, root):
        worldbody, contact = root.find("worldbody"), root.find("contact")
        h, t, d = self.wall_height / 2, self.wall_half_thickness, self.wall_offset
        # (centre offset, half sizes): two walls along x spanning the corners, two along y between
        walls = (((0, -d), (d + t, t)), ((0, d), (d + t, t)), ((d, 0), (t, d - t)), ((-d, 0), (t, d - t)))
        for b, (bx, by) in enumerate(self.bins):
            for w, ((ox, oy), (sx, sy)) in enumerate(walls):
                name = f"bin{b}_wall{w}"
                ET.SubElement(worldbody, "geom", name=name, type="box", pos=f"{bx + ox} {by + oy} {h}",
                              size=f"{sx} {sy} {h}", contype="0", conaffinity="0",
                              rgba="0.1 0.3 0.9 1" if b == 0 else "0.9 0.1 0.1 1")
                for other in ("cube", "left_finger", "right_finger", "hand"):
                    ET.SubElement(contact, "pair", name=f"{other}_{name}", geom1=other, geom2=name,
                                  friction=_PAIR_FRICTION)


ARM_MAKERS: dict[str, Callable[[], GoalEnv]] = {
    "arm_reach": ArmReach,
    "arm_push_easy": ArmPushEasy,
    "arm_push_hard": ArmPushHard,
    "arm_binpick_hard": ArmBinpickHard,
}

NAMES = tuple(ARM_MAKERS)

