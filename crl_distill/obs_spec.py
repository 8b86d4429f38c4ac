"""What a student observes: a subset of the teacher's state, plus a short stack of past ones.

A teacher may see everything the simulator knows (joint velocities, contact forces); the robot a
student runs on may not. An `ObsSpec` names the teacher state elements the student keeps and how
many past observations of them it also sees. The student's input, [input_size], is

    concat(s_t[idx], s_{t-1}[idx], ..., s_{t-history}[idx], goal)

where s_t is the teacher's state vector at step t and idx the kept indices. At an episode's first
step the past entries repeat the first observation. Goals are always seen in full.

Array functions take `xp` (numpy or jax.numpy), so the JAX trainers and the JAX-free runtime
share one definition of the layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from crl_distill.errors import CrlDistillError

#: the most past observations a student may stack (a short memory, not a sequence model)
MAX_HISTORY = 16


@dataclass(frozen=True)
class ObsSpec:
    """state_indices: teacher state elements kept, in order (None: all); history: past steps."""

    state_indices: tuple[int, ...] | None = None
    history: int = 0

    def __post_init__(self) -> None:
        if self.state_indices is not None:
            idx = tuple(int(i) for i in self.state_indices)
            object.__setattr__(self, "state_indices", idx)
            if not idx:
                raise CrlDistillError("a student observation spec must keep at least one state element")
            if min(idx) < 0 or len(set(idx)) != len(idx):
                raise CrlDistillError(f"student state indices must be distinct and >= 0, got {list(idx)}")
        if not 0 <= int(self.history) <= MAX_HISTORY:
            raise CrlDistillError(f"observation history must be in [0, {MAX_HISTORY}], got {self.history}")

    # -- parsing and text -------------------------------------------------------------------
    @classmethod
    def parse(cls, state: str | None = None, history: int = 0) -> ObsSpec:
        """`state` like "0:7,9" (Python-style half-open ranges and single indices); None or
        "all" keeps every element."""
        if state is None or state.strip() in ("", "all"):
            return cls(None, history)
        idx: list[int] = []
        for part in (p.strip() for p in state.split(",")):
            m = re.fullmatch(r"(\d+)(?::(\d+))?", part)
            if not m or (m[2] is not None and int(m[2]) <= int(m[1])):
                raise CrlDistillError(f"bad student state selection {part!r} in {state!r}: "
                                      f"expected indices and ranges like 0:7,9")
            idx.extend(range(int(m[1]), int(m[2])) if m[2] is not None else [int(m[1])])
        return cls(tuple(idx), history)

    def describe(self, state_size: int) -> str:
        kept = "all" if self.state_indices is None else _ranges(self.state_indices)
        past = f" + {self.history} past" if self.history else ""
        return f"state[{kept}] ({self.kept_size(state_size)} of {state_size}){past} + goal"

    def to_dict(self) -> dict[str, Any]:
        return {"state_indices": None if self.state_indices is None else list(self.state_indices),
                "history": self.history}

    # -- sizes ------------------------------------------------------------------------------
    @property
    def is_identity(self) -> bool:
        """True when the student sees exactly the teacher's observation."""
        return self.state_indices is None and self.history == 0

    def check(self, state_size: int, where: str = "the teacher's state") -> None:
        if self.state_indices is not None and max(self.state_indices) >= state_size:
            raise CrlDistillError(f"student state index {max(self.state_indices)} is out of range: "
                                  f"{where} has {state_size} elements")

    def kept_size(self, state_size: int) -> int:
        return state_size if self.state_indices is None else len(self.state_indices)

    def input_state_size(self, state_size: int) -> int:
        """Size of the state part of the student's input (current + past kept elements)."""
        return (self.history + 1) * self.kept_size(state_size)

    def input_size(self, state_size: int, goal_size: int) -> int:
        return self.input_state_size(state_size) + goal_size

    # -- arrays -----------------------------------------------------------------------------
    def select(self, state: Any, xp: Any = np) -> Any:
        """[..., state_size] -> [..., kept_size]."""
        return state if self.state_indices is None else state[..., xp.asarray(self.state_indices)]

    def start_history(self, state: Any, xp: Any = np) -> Any:
        """[B, state_size] first states -> history [B, history * kept_size] (repeats)."""
        return xp.tile(self.select(state, xp), (1, self.history))

    def push(self, history: Any, state: Any, xp: Any = np) -> Any:
        """History after seeing `state` [B, state_size]: newest first, oldest dropped."""
        if not self.history:
            return history
        k = self.select(state, xp)
        return xp.concatenate([k, history], axis=-1)[..., : history.shape[-1]]

    def student_input(self, obs: Any, history: Any, state_size: int, xp: Any = np) -> Any:
        """Teacher obs [B, state_size + goal] and history -> student input [B, input_size]."""
        state, goal = obs[..., :state_size], obs[..., state_size:]
        return xp.concatenate([self.select(state, xp), history, goal], axis=-1)


def _ranges(idx: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0:3,5"."""
    out, start = [], idx[0]
    for a, b in zip(idx, (*idx[1:], None), strict=True):
        if b != a + 1:
            out.append(f"{start}:{a + 1}" if a > start else str(a))
            start = b
    return ",".join(out)


class ObsStacker:
    """Host-side (numpy) student inputs from teacher observations, one history per batch row.

    The first call, and any call after `reset()`, starts every row's history from the state it
    is given; `reset(rows)` restarts only those rows (new episodes in some envs).
    """

    def __init__(self, spec: ObsSpec, state_size: int):
        self.spec, self.state_size = spec, state_size
        self._history: np.ndarray | None = None
        self._fresh: np.ndarray | None = None

    def reset(self, rows: Any = None) -> None:
        if rows is None or self._history is None:
            self._history = None
        else:
            self._fresh = np.zeros(len(self._history), bool) if self._fresh is None else self._fresh
            self._fresh[np.asarray(rows)] = True

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        spec, s = self.spec, self.state_size
        state = obs[..., :s]
        if self._history is None or len(self._history) != len(obs):
            self._history, self._fresh = spec.start_history(state), None
        elif self._fresh is not None and self._fresh.any():
            self._history[self._fresh] = spec.start_history(state[self._fresh])
            self._fresh = None
        x = spec.student_input(obs, self._history, s)
        self._history = spec.push(self._history, state)
        return x.astype(np.float32, copy=False)


__all__ = ["MAX_HISTORY", "ObsSpec", "ObsStacker"]
