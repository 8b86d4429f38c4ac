"""How a trained teacher acts: one value, recorded in every artifact that depends on it.

A teacher can act two ways, and each is one deterministic policy of the observation:

    Acting()                 its actor's mean action, tanh(mean(s, g))
    Acting(samples=K)        the critic's choice among K candidates tanh(mean + std * noise_k),
                             scored f(phi(s, a_k), psi(g)); the [K, A] noise rows are drawn once
                             from `noise_seed` (row 0 is zero: the mean action is a candidate)

Two noise seeds are two different policies, so the seed is part of the value: evaluation
(`eval --act-samples K`), labelling (`student --label critic`), export and the pipeline's
comparison all take an `Acting` and build the policy with `Teacher.policy(acting)`, and the
students' labels and the teacher they are scored against are one policy by construction.
Light on purpose (no JAX): configs and the CLI read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from crl_distill.errors import CrlDistillError


@dataclass(frozen=True)
class Acting:
    """samples: candidates per step (1 = the actor); noise_seed: seed of the fixed noise set."""

    samples: int = 1
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or self.samples < 1:
            raise CrlDistillError(f"act samples must be an integer >= 1, got {self.samples!r}")
        if not isinstance(self.noise_seed, int) or isinstance(self.noise_seed, bool):
            raise CrlDistillError(f"acting noise seed must be an integer, got {self.noise_seed!r}")

    @property
    def uses_critic(self) -> bool:
        return self.samples > 1

    @property
    def name(self) -> str:
        """Short and unique: 'actor' or 'critic best-of-16 (noise seed 0)'."""
        if not self.uses_critic:
            return "actor"
        return f"critic best-of-{self.samples} (noise seed {self.noise_seed})"

    @property
    def suffix(self) -> str:
        """For file and model names: '' or '-k16' (with '-n3' for a seed other than 0)."""
        if not self.uses_critic:
            return ""
        return f"-k{self.samples}" + (f"-n{self.noise_seed}" if self.noise_seed else "")

    def describe(self) -> str:
        if not self.uses_critic:
            return "the actor's deterministic action tanh(mean)"
        return (f"critic-selected: the best of {self.samples} fixed actor candidates under "
                f"f(phi(s, a), psi(g)) (noise seed {self.noise_seed}, row 0 = the mean action)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}

    @classmethod
    def from_dict(cls, d: Any) -> Acting:
        if not isinstance(d, dict):
            raise CrlDistillError(f"acting record is not an object: {d!r}")
        return cls(samples=d.get("samples", 1), noise_seed=d.get("noise_seed", 0))


#: the teacher's actor: what training evaluates and what students imitate by default
ACTOR = Acting()
