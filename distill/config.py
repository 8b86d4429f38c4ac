"""`DistillConfig`: the settings shared by every student of one `distill` call.

Each field is documented once, here, in its `setting` (crl_distill.settings, like NetConfig
and TeacherConfig); the CLI builds its options (default and help text) from these fields, so
nothing restates them. Light on purpose (no JAX): the CLI reads it at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.perturb import Perturbation, parse_perturbation
from crl_distill.settings import help_of, setting
from crl_distill.teacher.acting import Acting

ACTION_LOSSES = ("mse", "pre_tanh_mse", "kl")
LABELS = ("actor", "critic")
MODES = ("dagger", "offline")


@dataclass(frozen=True)
class DistillConfig:
    mode: str = setting("dagger", "dagger | offline (the teacher acts in every round).")
    iterations: int = setting(6, "Data-collection rounds.")
    num_envs: int = setting(64, "Envs per collection round.")
    steps_per_iter: int = setting(100, "Env steps per env per round.")
    sgd_steps_per_iter: int = setting(600, "SGD steps per round.", flag="--sgd-steps")
    batch_size: int = setting(256, "SGD batch (states).")
    bptt: int = setting(16, "Recurrent students: steps per training sequence (truncated "
                            "backpropagation through time; batch_size / bptt sequences per batch).")
    learning_rate: float = setting(1e-3, "Adam learning rate of the students.", flag="--lr")
    beta0: float = setting(1.0, "P(teacher acts) in round 0.")
    beta_decay: float = setting(0.5, "beta_i = beta0 * beta_decay**i.")
    action_loss: str = setting("mse", "mse | pre_tanh_mse | kl.")
    w_action: float = setting(1.0, "Weight of the action loss.")
    w_embed: float = setting(1.0, "Weight of the embedding MSE (students with encoders).")
    w_relational: float = setting(0.0, "Weight of the logit-matrix KL (students with encoders).")
    eval_episodes: int = setting(256, "Evaluation episodes (same seeds for teacher and students).",
                                 flag="--episodes")
    # The label is a function of the state (a fixed noise set); the teacher also acts that way
    # in DAgger rounds.
    label: str = setting("actor", "Teacher action labels: actor | critic (the best of "
                                  "label_samples actor samples under the critic).")
    label_samples: int = setting(16, "Candidates per label with label critic.")
    seed: int = setting(0, "Random seed.")
    perturb: str = setting("", "Distill under sensor noise, latency and model error: DAgger rolls "
                               "out in the perturbed robot, the teacher labels from the clean state, "
                               "the student learns from what it would sense (a preset: mild, robot, legged; "
                               "or fields, as `crl-distill eval --perturb`).")

    def __post_init__(self) -> None:
        require_choice("mode", self.mode, MODES)
        require_choice("label", self.label, LABELS)
        require_choice("action loss", self.action_loss, ACTION_LOSSES)
        for name in ("iterations", "num_envs", "steps_per_iter", "sgd_steps_per_iter",
                     "batch_size", "bptt", "eval_episodes", "label_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise CrlDistillError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.beta0 <= 1.0 or not 0.0 <= self.beta_decay <= 1.0:
            raise CrlDistillError("beta0 and beta_decay must lie in [0, 1]")
        if not self.learning_rate > 0:
            raise CrlDistillError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name in ("w_action", "w_embed", "w_relational"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise CrlDistillError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.seed, int):
            raise CrlDistillError(f"seed must be an integer, got {self.seed!r}")
        self.perturbation  # noqa: B018  (refuses a bad spec here, in one line)

    def beta(self, iteration: int) -> float:
        """Probability that the teacher's action is executed at a step of `iteration`."""
        if self.mode == "offline":
            return 1.0
        return self.beta0 * self.beta_decay**iteration

    @property
    def states_per_iter(self) -> int:
        return self.num_envs * self.steps_per_iter

    @property
    def perturbation(self) -> Perturbation:
        return parse_perturbation(self.perturb)

    @property
    def acting(self) -> Acting:
        """How the teacher acts when it labels and when it is scored: the students' labels and
        the teacher row of the report are this one policy."""
        return Acting(self.label_samples if self.label == "critic" else 1)


def field_help(name: str) -> str:
    """The one description of DistillConfig field `name`."""
    return help_of(DistillConfig, name)


#: the defaults, read by the CLI
DEFAULTS = DistillConfig()
