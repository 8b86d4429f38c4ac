"""Every artifact a command can be pointed at, loaded one way: `load_artifact(path)`.

    teacher run directory, teacher checkpoint (.npz), reference .pkl (with `env`)  -> "teacher"
    student set directory (the student `pick` chooses, or `student`), student file  -> "student"
    exported policy (.onnx)                                                         -> "onnx"

The result is one `Artifact` whatever was given: what it is, the env it acts in and the policy
it acts with. Evaluation (`evaluation.evaluate_artifact`), export, latency and the pipeline take
it from here; the files themselves stay known to their owners (`teacher.run_dir`,
`distill.student_set`, `export.exported`, `runtime` for the ONNX metadata).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crl_distill.checkpoint import peek_format
from crl_distill.distill import student_set
from crl_distill.envs import GoalEnv, make
from crl_distill.envs.observed import observed
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import Policy
from crl_distill.runtime import OnnxPolicy
from crl_distill.student.model import STUDENT_FORMAT, Student, load_student
from crl_distill.teacher.acting import ACTOR, Acting
from crl_distill.teacher.run_dir import CHECKPOINT_FORMAT, checkpoint_dir
from crl_distill.teacher.train import Teacher, load_teacher

KINDS = ("teacher", "student", "onnx")


@dataclass
class Artifact:
    """A loaded teacher, student or exported file.

    `env` is the env its policy acts in: a student's seen through its observation spec, an
    exported file's the plain env it names (the runtime applies the file's spec itself).
    Exactly one of `teacher`, `student`, `onnx` is set, as `kind` says; a teacher acts as
    `acting` says.
    """

    kind: str
    name: str
    env: GoalEnv
    source: Path
    acting: Acting = ACTOR
    teacher: Teacher | None = None
    student: Student | None = None
    onnx: OnnxPolicy | None = None

    @property
    def in_jax(self) -> bool:
        return self.onnx is None

    def policy(self, traceable: bool = False) -> Policy:
        """The jittable obs [B, O] -> action [B, A] (teacher or student; a recurrent student's
        is a `RecurrentPolicy`, which every evaluator also takes); `traceable` builds the same
        policy in a form ONNX tracing accepts."""
        if self.teacher is not None:
            return self.teacher.policy(self.acting, traceable)
        if self.student is not None:
            return self.student.policy()
        raise CrlDistillError(f"{self.source}: an exported file runs in onnxruntime, not JAX")

    def host_policy(self) -> Callable[[np.ndarray], np.ndarray]:
        """obs [B, O] numpy -> action [B, A] numpy through onnxruntime (a JAX policy is
        evaluated inside one jitted rollout: `policy`). The file's history restarts here."""
        if self.onnx is None:
            raise CrlDistillError(f"{self.source}: a {self.kind} acts in JAX (Artifact.policy)")
        self.onnx.reset()
        return self.onnx.act_env

    @property
    def params(self) -> Any:
        """The weights the policy closes over (what an export's `params_sha256` hashes)."""
        if self.teacher is not None:
            return self.teacher.params if self.acting.uses_critic else self.teacher.params["actor"]
        if self.student is not None:
            return self.student.params
        raise CrlDistillError(f"{self.source}: an exported file has no JAX parameters")

    @property
    def io_sizes(self) -> tuple[int, int]:
        """(observation size, action size) the policy expects and returns."""
        if self.onnx is not None:
            return self.onnx.env_state_size + self.onnx.goal_size, self.onnx.action_size
        return self.env.observation_size, self.env.action_size

    def target_env(self, name: str | None = None) -> GoalEnv:
        """The env to evaluate in: its own, or `name` seen as the policy sees its own (same
        observation spec), refused with one line when the sizes do not fit."""
        if name is None:
            return self.env
        target = make(name)
        if self.in_jax:
            target = observed(target, getattr(self.env, "spec", None))
        obs_size, action_size = self.io_sizes
        if target.observation_size != obs_size or target.action_size != action_size:
            raise CrlDistillError(
                f"env mismatch: the policy was made for {self.env.name!r} (obs {obs_size}, "
                f"action {action_size}); {target.name!r} has obs {target.observation_size}, "
                f"action {target.action_size}")
        return target


def load_artifact(source: str | Path, student: str | None = None, env: str | None = None,
                  acting: Acting = ACTOR) -> Artifact:
    """The artifact at `source` (module docstring). `student` picks one in a student set;
    `env` names the env a reference .pkl was trained on (the pickle does not say; evaluating
    in another env is `Artifact.target_env`); `acting` is how a teacher acts (a student or a
    file acts one way only)."""
    p = Path(source)
    art = _load(p, student, env)
    if art.kind == "teacher":
        art.acting = acting
        art.name += acting.suffix
    elif acting.uses_critic:
        raise CrlDistillError("acting with the critic (--act-samples > 1) needs a teacher; a "
                              "student is a plain MLP (distill it with --label critic instead)")
    return art


def teacher_artifact(teacher: Teacher, acting: Acting = ACTOR) -> Artifact:
    """A teacher the caller already holds, as an artifact."""
    return Artifact(kind="teacher", name=f"teacher-d{teacher.config.actor.depth}{acting.suffix}",
                    env=teacher.env, source=teacher.source, acting=acting, teacher=teacher)


def student_artifact(s: Student) -> Artifact:
    """A student the caller already holds, as an artifact (its env seen through its spec)."""
    env = observed(make(s.env_name), s.config.obs_spec)
    return Artifact(kind="student", name=s.config.name, env=env, source=s.source, student=s)


def _load(p: Path, student: str | None, env: str | None) -> Artifact:
    if p.suffix == ".pkl":
        return teacher_artifact(load_teacher(p, env))
    if p.is_dir():
        if student_set.is_student_set(p):
            return student_artifact(load_student(student_set.pick(p, student)))
        if checkpoint_dir(p).is_dir():
            return teacher_artifact(load_teacher(p))
        raise CrlDistillError(f"{p}: neither a student directory nor a teacher run directory")
    if not p.exists():
        raise CrlDistillError(f"{p}: no such file or directory")
    if p.suffix == ".onnx":
        policy = OnnxPolicy(p)
        return Artifact(kind="onnx", name=str(policy.metadata.get("name")), env=make(policy.env),
                        source=p, onnx=policy)
    fmt = peek_format(p)
    if fmt == STUDENT_FORMAT:
        return student_artifact(load_student(p))
    if fmt == CHECKPOINT_FORMAT:
        return teacher_artifact(load_teacher(p))
    raise CrlDistillError(f"{p}: a {fmt!r} file is not a teacher, a student or an exported policy")


__all__ = ["KINDS", "Artifact", "load_artifact", "student_artifact", "teacher_artifact"]
