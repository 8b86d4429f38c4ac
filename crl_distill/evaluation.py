"""One evaluator for every policy: the same env seeds, the same metrics, a 95% interval.

Metrics per episode: time at goal (steps with dist < threshold), success_any (ever reached the
goal), final distance. As in the paper's evaluator, an episode that terminates early (a fallen
robot) stops counting after its terminating step: later steps add no time at goal, and the final
distance is the one at that step. A JAX policy is rolled out inside one jitted `lax.scan`; a host policy
(e.g. onnxruntime) is stepped from Python over the same jitted env functions, so both see
identical starts and goals for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill.envs import make
from crl_distill.envs.base import GoalEnv
from crl_distill.envs.perturbed import perturbed, true_start
from crl_distill.errors import CrlDistillError
from crl_distill.metrics import episode_metrics, summarize
from crl_distill.native import NativeSim
from crl_distill.native import rollout as native_rollout
from crl_distill.perturb import NONE, Perturbation
from crl_distill.runtime import OnnxPolicy

if TYPE_CHECKING:  # the artifact loader knows every stage; this module sits below them
    from crl_distill.artifacts import Artifact

#: obs [B, obs_dim] -> action [B, action_size]
BatchPolicy = Callable[[jax.Array], jax.Array]


@dataclass(frozen=True)
class RecurrentPolicy:
    """A policy with memory: `step(carry [B, carry_size], obs [B, O]) -> (carry, action [B, A])`.

    The carry is zero at an episode's first step (`initial`), and each step's carry goes into
    the next. A stateless `BatchPolicy` is the case carry_size = 0 (`as_recurrent`), so one
    rollout serves both.
    """

    step: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    carry_size: int

    def initial(self, batch: int) -> jax.Array:
        """The carry at an episode's first step, [batch, carry_size] zeros."""
        return jnp.zeros((batch, self.carry_size), jnp.float32)


#: what every evaluator takes
Policy = BatchPolicy | RecurrentPolicy


def as_recurrent(policy: Policy) -> RecurrentPolicy:
    """`policy` itself, or a stateless one as a RecurrentPolicy with an empty carry."""
    if isinstance(policy, RecurrentPolicy):
        return policy
    return RecurrentPolicy(lambda carry, obs: (carry, policy(obs)), 0)


def first_step(policy: Policy) -> BatchPolicy:
    """obs [B, O] -> action [B, A]: `policy` at an episode's first step (a recurrent one from
    its zero carry), the cost of one control step; `policy` itself when it is stateless."""
    if not isinstance(policy, RecurrentPolicy):
        return policy
    return lambda obs: policy.step(policy.initial(obs.shape[0]), obs)[1]


def run_sequences(policy: Policy, obs: jax.Array) -> jax.Array:
    """Time-major observations [T, B, O], each column one episode from its first step ->
    actions [T, B, A] (call under jit)."""
    rec = as_recurrent(policy)
    return jax.lax.scan(rec.step, rec.initial(obs.shape[1]), obs)[1]


def episode_keys(seed: int, num_episodes: int) -> jax.Array:
    """Reset keys for evaluation episodes; a function of (seed, episode index) only."""
    return jax.random.split(jax.random.PRNGKey(seed), num_episodes)


def rollout_jax(env: GoalEnv, policy: Policy, keys: jax.Array,
                record_obs: bool = False) -> dict[str, jax.Array]:
    """Run one full episode per key with a jittable batch (or recurrent) policy (call under jit).

    Returns per-episode arrays [E]: time_at_goal, success_any, final_dist; with `record_obs`
    also the observations the policy saw, obs [T, E, obs_dim].
    """
    rec = as_recurrent(policy)
    state = jax.vmap(env.reset)(keys)

    def body(sc, _):
        s, carry = sc
        obs = s.obs
        carry, action = rec.step(carry, obs)
        s = jax.vmap(env.step)(s, action)
        return (s, carry), (s.metrics["success"], s.terminated, s.metrics["dist"],
                            obs if record_obs else None)

    _, (success, terminated, dist, obs) = jax.lax.scan(
        body, (state, rec.initial(keys.shape[0])), None, length=env.episode_length)
    out = episode_metrics(success, terminated, dist, xp=jnp)
    if record_obs:
        out["obs"] = obs
    return out


def rollout_host(
    env: GoalEnv, act: Callable[[np.ndarray], np.ndarray], keys: jax.Array, record_obs: bool = False
) -> dict[str, Any]:
    """Like `rollout_jax` but `act` is any host function on numpy arrays (e.g. onnxruntime).

    With `record_obs`, also returns the observations seen, [T, E, obs_dim].
    """
    reset = jax.jit(jax.vmap(env.reset), compiler_options=env.jit_options)
    step = jax.jit(jax.vmap(env.step), compiler_options=env.jit_options)
    state = reset(keys)
    steps, seen = [], []
    for _ in range(env.episode_length):
        obs = np.asarray(state.obs)
        if record_obs:
            seen.append(obs)
        state = step(state, jnp.asarray(act(obs)))
        steps.append((state.metrics["success"], state.terminated, state.metrics["dist"]))
    success, terminated, dist = (np.stack(x) for x in zip(*steps, strict=True))
    out: dict[str, Any] = episode_metrics(success, terminated, dist)
    if record_obs:
        out["obs"] = np.stack(seen)
    return out


def evaluate(env: GoalEnv, policy: Policy, num_episodes: int = 256, seed: int = 0) -> dict:
    """Evaluate a jittable batch (or recurrent) policy on `num_episodes` seeded episodes."""
    run = jax.jit(lambda k: rollout_jax(env, policy, k), compiler_options=env.jit_options)
    per_ep = run(episode_keys(seed, num_episodes))
    return summarize(jax.device_get(per_ep))


def evaluate_artifact(artifact: Artifact, env: str | None = None, episodes: int = 256,
                      seed: int = 0, perturb: Perturbation = NONE) -> dict[str, Any]:
    """Any loaded artifact (`artifacts.load_artifact`: teacher, student or exported file) on
    the same seeded episodes, in its own env or in `env` (seen as it sees its own), under
    `perturb` (same starts and goals as without): a JAX policy inside one jitted rollout, an
    exported file through onnxruntime."""
    if episodes < 1:
        raise CrlDistillError("episodes must be >= 1")
    target = perturbed(artifact.target_env(env), perturb)
    if artifact.in_jax:
        summary = evaluate(target, artifact.policy(), episodes, seed)
    else:
        summary = summarize(rollout_host(target, artifact.host_policy(), episode_keys(seed, episodes)))
    trained_on = artifact.onnx.env if artifact.onnx is not None else artifact.env.name
    return {"source": str(artifact.source), "kind": artifact.kind, "name": artifact.name,
            "env": target.name, "trained_on": trained_on, "seed": seed,
            **({"acting": artifact.acting.to_dict()} if artifact.kind == "teacher" else {}),
            "perturbation": perturb.to_dict(), **summary}


def native_target(onnx_path: str, perturb: Perturbation = NONE) -> tuple[OnnxPolicy, dict, GoalEnv]:
    """The exported file, the native MuJoCo model it carries and its (perturbed) JAX env,
    checked against each other; one line when the file cannot run in native MuJoCo."""
    policy = OnnxPolicy(onnx_path)
    spec = policy.metadata.get("native")
    if not spec:
        raise CrlDistillError(f"{onnx_path}: its env {policy.env!r} has no native MuJoCo model "
                              f"(sim-to-sim runs exist for the reacher and the ant)")
    if spec.get("env") != policy.env:
        raise CrlDistillError(f"{onnx_path}: its native model is for {spec.get('env')!r} but the "
                              f"policy controls {policy.env!r}")
    env = perturbed(make(policy.env), perturb)
    if policy.env_state_size != env.state_size:
        what = "its observation spec reads" if policy.obs_spec is not None else "it observes"
        raise CrlDistillError(f"{onnx_path}: {what} {policy.env_state_size} state values but "
                              f"native {env.name} produces {env.state_size}")
    return policy, spec, env


def env_starts(env: GoalEnv, seed: int, episodes: int) -> Any:
    """The env's reset batch for `episode_keys(seed, episodes)`, on the host."""
    reset = jax.jit(jax.vmap(env.reset), compiler_options=env.jit_options)
    return jax.device_get(reset(episode_keys(seed, episodes)))


def run_native(policy: OnnxPolicy, spec: dict, env: GoalEnv, start: Any,
               perturb: Perturbation = NONE, seed: int = 0) -> dict[str, Any]:
    """One episode per start of `env` (`env_starts`) in native MuJoCo under `perturb`: the
    summary. The model draw is the JAX env's where `env` is perturbed, else `seed`'s."""
    sim = NativeSim(spec, int(np.shape(start.goal)[0]), perturb=perturb, seed=seed)
    policy.reset()
    robot, factors = true_start(env, start)
    per_step = native_rollout(sim, policy.act_env, np.asarray(robot.sim.q), np.asarray(robot.sim.qd),
                              np.asarray(start.goal), list(env.goal_indices),
                              env.success_threshold, env.episode_length, factors)
    return summarize(episode_metrics(**per_step))


def evaluate_native(onnx_path: str, episodes: int = 128, seed: int = 0,
                    perturb: Perturbation = NONE, training_sim: bool = True) -> dict[str, Any]:
    """An exported policy in the training simulator and in native MuJoCo, side by side.

    Both run the file through onnxruntime from the same starts and goals (the env's own reset
    for `episode_keys(seed, episodes)`): the brax/JAX env steps one simulator, MuJoCo's C engine
    (`crl_distill.native`, reading the model the file carries) the other. Under `perturb` both
    run it, each episode with the same model draw in both. Returns
    {"brax": summary, "native": summary, "ratio": {metric: native / brax}}; with
    `training_sim=False` native MuJoCo only ("brax" and "ratio" None).
    """
    if episodes < 2:
        raise CrlDistillError("episodes must be >= 2 for an interval")
    policy, spec, env = native_target(onnx_path, perturb)
    start = env_starts(env, seed, episodes)
    brax = ratio = None
    if training_sim:
        policy.reset()
        brax = summarize(rollout_host(env, policy.act_env, episode_keys(seed, episodes)))
    native = run_native(policy, spec, env, start, perturb, seed)
    if brax is not None:
        ratio = {k: (native[k] / brax[k] if brax[k] else float("nan"))
                 for k in ("success_any", "time_at_goal")}
    return {"source": str(onnx_path), "env": env.name, "episodes": episodes, "seed": seed,
            "control_period": env.control_period, "perturbation": perturb.to_dict(),
            "brax": brax, "native": native, "ratio": ratio}


__all__ = ["BatchPolicy", "Policy", "RecurrentPolicy", "as_recurrent", "env_starts", "first_step",
           "episode_keys", "episode_metrics", "evaluate", "evaluate_artifact",
           "evaluate_native", "native_target", "run_native",
           "rollout_host", "rollout_jax", "run_sequences", "summarize"]
