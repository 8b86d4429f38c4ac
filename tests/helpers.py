"""Small fixtures shared by several test files (imported as `helpers`)."""

from __future__ import annotations

from pathlib import Path

import jax

from crl_distill.envs import make
from crl_distill.teacher.config import NetConfig, TeacherConfig
from crl_distill.teacher.crl import CRL
from crl_distill.teacher.train import Teacher


def fixed_teacher(env: str = "pointmaze_u", depth: int = 0, width: int = 32, seed: int = 3,
                  repr_dim: int = 16) -> Teacher:
    """An untrained teacher with fixed random weights: a smooth, deterministic target."""
    cfg = TeacherConfig(env=env, actor=NetConfig(depth, width), critic=NetConfig(depth, width),
                        repr_dim=repr_dim, num_envs=16, unroll_length=10, replay_capacity=40)
    e = make(cfg.env)
    crl = CRL(cfg, e)
    ts = crl.init_train_state(jax.random.PRNGKey(seed))
    return Teacher(config=cfg, env=e, params={"actor": ts.actor, "critic": ts.critic}, crl=crl,
                   source=Path("/nonexistent/checkpoints/epoch-000001.npz"), epoch=1)
