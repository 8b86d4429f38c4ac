"""Stage 1: deep goal-conditioned contrastive RL teachers.

>>> from crl_distill.teacher import configure, train_teacher, load_teacher
>>> cfg = configure("pointmaze_u", depth=16)        # CPU or GPU preset, then overrides
>>> run = train_teacher(cfg, "runs/pm16")
>>> teacher = load_teacher("runs/pm16"); teacher.act(obs)
"""

from __future__ import annotations

import math
from typing import Any

from crl_distill.errors import CrlDistillError
from crl_distill.teacher.config import NetConfig, TeacherConfig, preset

_LAZY = ("Teacher", "load_teacher", "train_teacher")


def __getattr__(name: str) -> Any:
    # The configs import without JAX (the CLI reads their defaults); training loads on use.
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from crl_distill.teacher import train

    return getattr(train, name)


def configure(
    env: str = "pointmaze_u",
    *,
    depth: int = 4,
    actor_depth: int | None = None,
    critic_depth: int | None = None,
    width: int | None = None,
    total_env_steps: int | None = None,
    platform: str | None = None,
    layer_norm: bool = True,
    residual: bool = True,
    activation: str = "swish",
    dtype: str = "float32",
    remat: bool = False,
    **overrides: Any,
) -> TeacherConfig:
    """A TeacherConfig from the platform preset ("cpu" or "gpu"; default: JAX's backend).

    `depth` sets actor and critic; `actor_depth` / `critic_depth` override each.
    `total_env_steps`, when given, sets `epochs` (rounded up to whole epochs).
    Any other TeacherConfig field can be passed by name; None means "keep the preset".
    """
    if platform is None:
        import jax

        platform = "cpu" if jax.default_backend() == "cpu" else "gpu"
    base = preset(platform)
    width = width or NetConfig().width
    base.update({k: v for k, v in overrides.items() if v is not None})

    def net(d: int | None) -> NetConfig:
        return NetConfig(depth=depth if d is None else d, width=width, layer_norm=layer_norm,
                         residual=residual, activation=activation, dtype=dtype, remat=remat)

    cfg = TeacherConfig(env=env, actor=net(actor_depth), critic=net(critic_depth), **base)
    if total_env_steps is not None:
        prefill = cfg.prefill_steps * cfg.num_envs
        if total_env_steps <= prefill:
            raise CrlDistillError(f"--total-env-steps {total_env_steps} is not more than the "
                                  f"{prefill} random prefill steps")
        epochs = math.ceil((total_env_steps - prefill) / cfg.env_steps_per_epoch)
        cfg = TeacherConfig(**{**cfg.__dict__, "epochs": epochs})
    return cfg


__all__ = ["NetConfig", "Teacher", "TeacherConfig", "configure", "load_teacher", "train_teacher"]
