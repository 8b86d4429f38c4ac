"""The humanoid: its torso reaches an x-y-z goal at standing height, in the open (`humanoid`)
and in the paper's mazes (`humanoid_<maze>_maze`).

State (246): 24 qpos + 23 qvel + 11x10 com inertia + 11x6 com velocity + 23 actuator torques;
goal: torso x, y, z, 1-5 m away (uniform distance, so not uniform over the annulus), z = 1.25;
in a maze, the paper's start and goal cells (or `:goals=free`). Physics, gears and episode length
follow the public JaxGCRL / scaling-crl suite as its code runs on brax 0.10.1 (reimplemented,
not copied): 0.003 s x 10 = 0.03 s per step in the open, 0.0015 s x 10 = 0.015 s in mazes (the
reference's `opt.timestep` edit does not reach that brax's spring dt, so its envs run on the
asset timesteps), and the episode ends when the torso z leaves [1.0, 2.0] m. Maze walls (2 m
cells, 1 m high) collide with every humanoid geom, as in the paper's model.

Deliberate difference: the humanoid has no "target" body, so the goal is not leaked into the
state; the reference state (268) also carries the target's two slide joints, its link and its
joint torques, so a reference humanoid checkpoint does not fit these envs (the importer refuses
it). No `backend` option: the com-inertia part of the state is written for the spring
pipeline's scaled masses and inertias (`_observe`), which MuJoCo's solver does not use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crl_distill.envs.brax_base import BraxGoalEnv, _HealthyTorso, _MazeMixin

#: the paper's humanoid mazes
HUMANOID_MAZES = ("u", "big", "hardest")


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
    #: per geom-type group; the humanoid's ~13 capsules can touch a few wall cells at once
    max_geom_pairs = 24

    def __init__(self, maze: str):
        self._init_maze("humanoid", maze)
        self.layout = (
            "state = 24 qpos (torso x,y,z first) + 23 qvel + 11x10 com inertia + 11x6 com "
            f"velocity + 23 actuator torques; goal = target x,y,z (z = 1.25; maze '{maze}', "
            f"{self.cell_size:g} m cells); goal_indices 0:3"
        )


__all__ = ["HUMANOID_MAZES", "Humanoid", "HumanoidMaze"]
