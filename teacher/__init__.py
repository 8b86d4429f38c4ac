"""Stage 1: deep goal-conditioned contrastive RL teachers.

>>> from crl_distill.teacher import configure, train_teacher, load_teacher
>>> cfg = configure("pointmaze_u", depth=16)        # CPU or GPU preset, then overrides
>>> run = train_teacher(cfg, "runs/pm16")
>>> teacher = load_teacher("runs/pm16"); teacher.act(obs)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from crl_distill.errors import CrlDistillError
from crl_distill.lazy import lazy_exports
from crl_distill.teacher.acting import ACTOR, Acting
from crl_distill.teacher.config import PAPER, NetConfig, TeacherConfig, preset

__getattr__ = lazy_exports(__name__, {"Teacher": "train", "load_teacher": "train",
                                      "train_seeds": "train", "train_teacher": "train"})


def configure(
    env: str = PAPER.env,
    *,
    actor_depth: int | None = None,
    critic_depth: int | None = None,
    total_env_steps: int | None = None,
    platform: str | None = None,
    **settings: Any,
) -> TeacherConfig:
    """A TeacherConfig from the platform preset ("cpu" or "gpu"; default: JAX's backend; on
    CPU with `env`'s own entry, `config.ENV_CPU_PRESETS`).

    Any NetConfig field (depth, width, layer_norm, residual, activation, dtype, remat, ...) sets
    actor and critic alike; `actor_depth` / `critic_depth` override the depth of one.
    `total_env_steps`, when given, sets `epochs` (rounded up to whole epochs).
    Any TeacherConfig field can be passed by name; None means "keep the preset / default".
    """
    net_names = {f.name for f in dataclasses.fields(NetConfig)}
    # actor and critic are built here from the NetConfig fields (a NetConfig of one's own:
    # TeacherConfig(...) directly)
    known = net_names | {f.name for f in dataclasses.fields(TeacherConfig)} - {"env", "actor", "critic"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise CrlDistillError(f"configure() takes TeacherConfig and NetConfig fields by name; "
                              f"unknown: {', '.join(unknown)}")
    if platform is None:
        import jax

        platform = "cpu" if jax.default_backend() == "cpu" else "gpu"
    given = {k: v for k, v in settings.items() if v is not None}
    net = {k: given.pop(k) for k in net_names & set(given)}

    def net_with(depth: int | None) -> NetConfig:
        return NetConfig(**{**net, **({} if depth is None else {"depth": depth})})

    cfg = TeacherConfig(**{"env": env, "actor": net_with(actor_depth),
                           "critic": net_with(critic_depth), **preset(platform, env), **given})
    if total_env_steps is not None:
        prefill = cfg.prefill_steps * cfg.num_envs
        if total_env_steps <= prefill:
            raise CrlDistillError(f"--total-env-steps {total_env_steps} is not more than the "
                                  f"{prefill} random prefill steps")
        epochs = math.ceil((total_env_steps - prefill) / cfg.env_steps_per_epoch)
        cfg = dataclasses.replace(cfg, epochs=epochs)
    return cfg


__all__ = ["ACTOR", "Acting", "NetConfig", "Teacher", "TeacherConfig", "configure", "load_teacher",
           "train_seeds", "train_teacher"]
