"""What a robot does to a policy that a perfect simulator does not: one perturbation spec, in
physical units, and its timing and model-draw rules, shared by both simulators.

    spec = parse_perturbation("robot")                     # a preset
    spec = parse_perturbation("latency=0.02,obs_noise=1,mass=0.8:1.2")

No JAX here: `crl_distill.envs.perturbed` applies a spec to a JAX env (every env vmapped,
delay lines and draws in the env state), `crl_distill.native` to MuJoCo's C engine; both take
their schedule (`Schedule`) and their model edits (`MODEL_FIELDS`, `scaled_fields`) from this
module, so that the two mean the same thing.

Semantics, per control step of n physics substeps (timestep dt):

* Action latency L_a = D_a substeps (rounded): the command the policy returns at time t drives
  the motors from t + L_a on; until then the previous command holds, as on a real bus. Before
  the first command arrives the motors get zero. L_a may exceed a control period.
* Observation latency L_o = D_o substeps: the state the policy sees at time t was measured at
  t - L_o (before the episode: its first state).
* Observation noise: uniform in +-obs_noise x SENSOR_NOISE[unit] on every state element (the
  goal is commanded, so exact), drawn fresh each step on the delayed reading.
* Action noise: uniform in +-action_noise on the command (action units, [-1, 1]), before the
  delay line, clipped to the action bounds.
* Model error, drawn per episode, each factor uniform in [lo, hi]: `mass` one factor per body
  on body mass and inertia, `friction` one per episode on every geom's sliding friction, `gain`
  one per actuator on its gain and bias (motor strength), `damping` one per joint dof.
* Pushes (velocity kicks), robots with a free base only: after a wait of U(push_interval) s
  (from the episode start, then from the end of the last kick) the base's horizontal velocity
  changes by U(0, push) m/s in a uniform direction, spread evenly over U(push_duration) s of
  substeps. Each episode's kicks are drawn at its start (`kick_plan`), so a paired run can give
  both simulators the same ones. Changing the free joint's velocity, rather than applying a
  torso force as mujoco_playground does, makes the change exactly the same in both engines.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from crl_distill.errors import CrlDistillError

#: sensor noise half-width per unit at obs_noise = 1. rad, rad/s: mujoco_playground's Go1
#: joystick env (joint position +-0.03 rad, joint velocity +-1.5 rad/s); m/s: its linear
#: velocity +-0.1; "1" (unitless, cos/sin): its gravity vector +-0.05; m: 1 cm, ours (a motion
#: capture or odometry error; no anchor); cell: a tenth of a maze cell, ours.
SENSOR_NOISE: dict[str, float] = {"rad": 0.03, "rad/s": 1.5, "m/s": 0.1, "1": 0.05, "m": 0.01,
                                  "cell": 0.1, "": 0.01}

#: model factors: name -> (MjModel / mjx.Model fields it scales, how many factors it draws)
MODEL_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    # per body that moves on its own (brax's fused bodies: `body_factor_index`)
    "mass": (("body_mass", "body_inertia"), "nbody"),
    "friction": (("geom_friction",), "one"),
    "gain": (("actuator_gainprm", "actuator_biasprm"), "nu"),
    "damping": (("dof_damping",), "nv"),
}
Range = tuple[float, float]
NOMINAL: Range = (1.0, 1.0)
#: fields given as lo:hi ranges
RANGE_FIELDS = (*MODEL_FIELDS, "push_duration", "push_interval")


@dataclass(frozen=True)
class Perturbation:
    """One robot's worth of trouble (module docstring for the exact semantics)."""

    obs_noise: float = 0.0      # x SENSOR_NOISE per state element's unit
    obs_latency: float = 0.0    # seconds
    action_latency: float = 0.0  # seconds
    action_noise: float = 0.0   # half-width, action units
    mass: Range = NOMINAL       # factor range per body (mass and inertia)
    friction: Range = NOMINAL   # factor range, all geoms' sliding friction
    gain: Range = NOMINAL       # factor range per actuator
    damping: Range = NOMINAL    # factor range per dof
    push: float = 0.0           # m/s, largest velocity kick (0: no pushes)
    push_duration: Range = (0.05, 0.2)  # seconds a kick lasts
    push_interval: Range = (1.0, 3.0)   # seconds between kicks
    preset: str = ""            # the preset it came from, if any (recorded, not used)

    def __post_init__(self) -> None:
        for name in ("obs_noise", "obs_latency", "action_latency", "action_noise", "push"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise CrlDistillError(f"perturbation {name} must be a number >= 0, got {v}")
        for name in RANGE_FIELDS:
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 < lo <= hi:
                raise CrlDistillError(f"perturbation {name} range must be 0 < lo <= hi, got "
                                      f"{lo}:{hi}")

    @property
    def is_none(self) -> bool:
        return self.describe() == "none"

    @property
    def name(self) -> str:
        """The preset's name, or the fields that differ from none."""
        return self.preset or self.describe()

    @property
    def randomizes_model(self) -> bool:
        return any(getattr(self, name) != NOMINAL for name in MODEL_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Perturbation:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise CrlDistillError(f"not a perturbation record: {d!r}")
        return cls(**{k: (tuple(v) if k in RANGE_FIELDS else v) for k, v in d.items()})

    def describe(self) -> str:
        """'obs_latency=0.02,mass=0.9:1.1' (only what differs from none), or 'none'."""
        parts = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "preset" or v == f.default or (f.name.startswith("push_") and not self.push):
                continue
            parts.append(f"{f.name}={v[0]:g}:{v[1]:g}" if isinstance(v, tuple) else f"{f.name}={v:g}")
        return ",".join(parts) or "none"


NONE = Perturbation()
#: named presets. mild: half of robot. robot: sensor noise at mujoco_playground Go1's levels
#: (SENSOR_NOISE); 20 ms of observation and 20 ms of action latency (a command 40 ms after
#: the state it answers, the top of the 5-40 ms a robot bus brings); mass +-10% and joint
#: damping +-10% (Go1's link-mass range), floor friction scale 0.6-1.2 (Go1's U(0.4, 1.0)
#: about our models' 1.0 default is wider than a scale; ours), motor strength +-10% (ours);
#: action noise 0.02 (ours). legged: robot plus Go1's velocity kicks (0-3 m/s for 0.05-0.2 s
#: every 1-3 s), for robots with a free base (the reacher and the arm have none to push).
PRESETS: dict[str, Perturbation] = {
    "none": dataclasses.replace(NONE, preset="none"),
    "mild": Perturbation(obs_noise=0.5, obs_latency=0.01, action_latency=0.01, action_noise=0.01,
                         mass=(0.95, 1.05), friction=(0.8, 1.1), gain=(0.95, 1.05),
                         damping=(0.95, 1.05), preset="mild"),
    "robot": Perturbation(obs_noise=1.0, obs_latency=0.02, action_latency=0.02, action_noise=0.02,
                          mass=(0.9, 1.1), friction=(0.6, 1.2), gain=(0.9, 1.1),
                          damping=(0.9, 1.1), preset="robot"),
}
PRESETS["legged"] = dataclasses.replace(PRESETS["robot"], push=3.0, preset="legged")
#: short names accepted in a spec string
ALIASES = {"latency": ("obs_latency", "action_latency"), "noise": ("obs_noise",)}


def parse_perturbation(text: str | None) -> Perturbation:
    """A preset name, or comma-separated fields (`latency=0.02` sets both latencies; ranges as
    `lo:hi`), optionally starting from a preset: `robot,mass=0.8:1.2`. One line on bad input."""
    if text is None or not text.strip():
        return NONE
    fields = {f.name: f for f in dataclasses.fields(Perturbation)} | {k: None for k in ALIASES}
    values: dict[str, Any] = {}
    base = NONE
    for item in (p.strip() for p in text.split(",")):
        if "=" not in item:
            if item not in PRESETS or values or base is not NONE:
                raise CrlDistillError(f"--perturb: {item!r} is not a preset ({', '.join(PRESETS)}) "
                                      f"at the start, nor name=value")
            base = PRESETS[item]
            continue
        name, _, raw = (s.strip() for s in item.partition("="))
        if name not in fields or name == "preset":
            raise CrlDistillError(f"--perturb: unknown field {name!r}; valid: "
                                  f"{', '.join(sorted(set(fields) - {'preset'}))}")
        try:
            if name in RANGE_FIELDS:
                lo, sep, hi = raw.partition(":")
                value: Any = (float(lo), float(hi if sep else lo))
            else:
                value = float(raw)
        except ValueError:
            raise CrlDistillError(f"--perturb: {name}={raw!r} is not a number"
                                  f"{' or lo:hi range' if name in RANGE_FIELDS else ''}") from None
        for target in ALIASES.get(name, (name,)):
            values[target] = value
    # a preset with fields changed is no longer that preset
    return dataclasses.replace(base, **values, preset="" if values else base.preset)


@dataclass(frozen=True)
class Schedule:
    """A spec's latencies as whole physics substeps of one env (n substeps per control step).

    Each control step runs its substeps as `segments`: (substeps, command slot) runs, slot k
    being the command the policy returned k steps ago (0: this step's); `read_after` is the
    substep after which this step's sensor reading is taken, and the policy sees the reading
    taken `obs_lag` steps ago.
    """

    substeps: int
    action_delay: int
    obs_delay: int

    @classmethod
    def of(cls, spec: Perturbation, timestep: float, substeps: int) -> Schedule:
        return cls(substeps, round(spec.action_latency / timestep), round(spec.obs_latency / timestep))

    @property
    def action_slots(self) -> int:
        """Commands the delay line holds: this step's and the ones still to arrive."""
        return self.action_delay // self.substeps + 2

    @property
    def read_after(self) -> int:
        return self.substeps - self.obs_delay % self.substeps

    @property
    def obs_lag(self) -> int:
        return self.obs_delay // self.substeps

    def segments(self) -> list[tuple[int, int, bool]]:
        """[(substeps, command slot, read the sensor after it)] covering one control step."""
        p, s = divmod(self.action_delay, self.substeps)
        cuts = sorted({0, s, self.read_after, self.substeps})
        out = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            out.append((b - a, p + 1 if a < s else p, b == self.read_after))
        return out


def factor_counts(spec: Perturbation, sizes: dict[str, int]) -> dict[str, int]:
    """How many factors each randomized model factor draws, given the model's sizes
    {"nbody", "nu", "nv"}; only factors whose range is not nominal."""
    return {name: (1 if per == "one" else sizes[per])
            for name, (_, per) in MODEL_FIELDS.items() if getattr(spec, name) != NOMINAL}


def draw_factors(spec: Perturbation, sizes: dict[str, int],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One episode's model factors (numpy; the JAX env draws the same distribution)."""
    return {name: rng.uniform(*getattr(spec, name), n) for name, n in factor_counts(spec, sizes).items()}


def scaled_fields(base: dict[str, Any], factors: dict[str, Any]) -> dict[str, Any]:
    """The model fields `factors` change, from the nominal `base` fields (numpy or jax arrays,
    or anything with `*` and index-free broadcasting); keys as MjModel's / mjx.Model's."""
    out = {}
    if "mass" in factors:
        f = factors["mass"]
        out["body_mass"] = base["body_mass"] * f
        out["body_inertia"] = base["body_inertia"] * f[:, None]
    if "friction" in factors:
        # sliding friction only (column 0); torsional and rolling stay
        col = np.array([1.0, 0.0, 0.0])
        out["geom_friction"] = base["geom_friction"] * (1.0 + (factors["friction"][0] - 1.0) * col)
    if "gain" in factors:
        # gain and the position / velocity bias terms scale together (a weaker motor is weaker
        # at every term); a plain motor has zero bias
        f = factors["gain"][:, None]
        out["actuator_gainprm"] = base["actuator_gainprm"] * f
        out["actuator_biasprm"] = base["actuator_biasprm"] * f
    if "damping" in factors:
        out["dof_damping"] = base["dof_damping"] * factors["damping"]
    return out


def body_factor_index(parent: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """[nbody] the mass factor each MuJoCo body takes: the index, among the bodies that move
    on their own (the world and every body with a joint), of its nearest such ancestor or
    itself. brax fuses each jointless body into its parent, so its model has exactly those
    bodies, in this order: a fused body scaled by one factor is its parts scaled by it."""
    kept = [b for b in range(len(parent)) if b == 0 or joints[b] > 0]
    rank = {b: i for i, b in enumerate(kept)}
    out = []
    for b in range(len(parent)):
        while b not in rank:
            b = int(parent[b])
        out.append(rank[b])
    return np.asarray(out)


def has_free_base(jnt_type: Any) -> bool:
    """The model's first joint is free (MuJoCo's mjJNT_FREE, 0): a base that can be pushed."""
    return len(jnt_type) > 0 and int(jnt_type[0]) == 0


def kick_count(spec: Perturbation, episode_seconds: float) -> int:
    """Kicks an episode of `episode_seconds` can hold at the shortest wait (0: no pushes)."""
    return math.ceil(episode_seconds / spec.push_interval[0]) if spec.push else 0


def kick_plan(spec: Perturbation, timestep: float, u: Any, xp: Any = np) -> Any:
    """[K, 4] one episode's kicks from uniforms `u` [K, 4] in [0, 1) (numpy, or jax.numpy as
    `xp`): start substep, substeps, and the x and y velocity added per substep (m/s)."""
    (w_lo, w_hi), (d_lo, d_hi) = spec.push_interval, spec.push_duration
    wait = xp.round((w_lo + (w_hi - w_lo) * u[:, 0]) / timestep)
    steps = xp.maximum(xp.round((d_lo + (d_hi - d_lo) * u[:, 1]) / timestep), 1.0)
    start = xp.cumsum(wait) + xp.cumsum(steps) - steps
    per = spec.push * u[:, 2] / steps
    angle = 2 * math.pi * u[:, 3]
    return xp.stack([start, steps, per * xp.cos(angle), per * xp.sin(angle)], 1)


def kick_velocity(plan: Any, substep: Any, xp: Any = np) -> Any:
    """[2] the base velocity the kicks of `plan` add at physics substep `substep` (from the
    episode start)."""
    on = (plan[:, 0] <= substep) & (substep < plan[:, 0] + plan[:, 1])
    return xp.sum(xp.where(on[:, None], plan[:, 2:], 0.0), 0)


def noise_scale(units: tuple[str, ...], size: int, spec: Perturbation) -> np.ndarray:
    """[size] half-width of each state element's sensor noise, from its unit."""
    units = units or ("",) * size
    return np.array([spec.obs_noise * SENSOR_NOISE.get(u, SENSOR_NOISE[""]) for u in units],
                    np.float32)


__all__ = ["MODEL_FIELDS", "NONE", "PRESETS", "RANGE_FIELDS", "SENSOR_NOISE", "Perturbation",
           "Schedule", "body_factor_index", "draw_factors", "factor_counts", "has_free_base", "kick_count",
           "kick_plan", "kick_velocity", "noise_scale", "parse_perturbation", "scaled_fields"]
