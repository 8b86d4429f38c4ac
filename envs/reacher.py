"""The reacher: a two-link planar arm whose fingertip reaches a target, as a goal-conditioned env.

State (10): cos(q0, q1), sin(q0, q1), fingertip x, y, z and its world-frame velocity (the true
velocity of the fingertip point); goal: the target's x, y, z, at a uniform angle and a radius
uniform in [0, 0.2] m. Physics and gears follow the public JaxGCRL / scaling-crl suite
(reimplemented, not copied), except the integration: the reference's 0.01 s x 4 diverges in the
brax we use (all of 64 envs within 200 steps, even with zero action), so ours takes
0.005 s x 8 for the same 0.04 s per step. `reacher:backend=mjx` runs MuJoCo's own solver.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from crl_distill.envs.brax_base import BraxGoalEnv


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


__all__ = ["Reacher"]
