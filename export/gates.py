"""The gates an exported file passes before it is written (each failure names its gate).

  1. checker: onnx.checker (full) and strict shape inference;
  2. numeric: onnxruntime vs JAX, max |diff| <= 1e-5 on >= 1000 observations (real rollout
     states + random ones) at batch sizes 1, 2, 7, 64; onnx.reference.ReferenceEvaluator agrees.
     A recurrent student is compared over whole sequences from a zero state (the state fed
     back call after call), its batch sizes counting sequences;
  3. closed_loop: onnxruntime drives the env over the JAX evaluation's seeds: on every state
     the file visited, JAX (each episode replayed from its start) acts within 1e-5 of it, and
     the success counts agree within one episode or, where the simulator is chaotic, within
     the 95% band of two runs of one policy (`success_band`);
  4. robust (only when asked: `export(..., robust=SPEC, min_retention=R)`): the file in native
     MuJoCo under a perturbation spec keeps >= R x the clean teacher's time at goal.

The JAX side of every comparison is the function that was traced (`Artifact.policy(traceable=True)`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from crl_distill.artifacts import Artifact
from crl_distill.envs import GoalEnv
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import (
    Policy,
    RecurrentPolicy,
    episode_keys,
    evaluate_native,
    rollout_host,
    rollout_jax,
)
from crl_distill.evaluation import run_sequences as jax_sequences
from crl_distill.perturb import Perturbation
from crl_distill.runtime import SessionStepper, _import_ort
from crl_distill.runtime import run_sequences as onnx_sequences

BATCH_SIZES = (1, 2, 7, 64)
TOLERANCE = 1e-5


class GateError(CrlDistillError):
    """An export gate failed; `gate` names it."""

    def __init__(self, gate: str, message: str):
        super().__init__(f"export gate '{gate}' failed: {message}")
        self.gate = gate


def gate_checker(model: Any) -> dict:
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise GateError("checker", str(e).splitlines()[0][:300]) from None
    return {"passed": True}


def ort_session(model_bytes: bytes) -> Any:
    """A one-thread CPU onnxruntime session on serialized model bytes."""
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def parity_observations(env: GoalEnv, policy: Policy, seed: int, n_real: int = 1024,
                        n_random: int = 256, seq_len: int = 64) -> np.ndarray:
    """Time-major sequences [T, S, O] float32, each from an episode's first step: real states
    from JAX rollouts of the policy plus random observations. A stateless policy gets
    one-step sequences (T = 1: n_real states drawn from whole episodes, then n_random); a
    recurrent one episodes' first `seq_len` steps (n_real // seq_len of them, at least 64 for
    the largest batch size, then n_random // seq_len random sequences)."""
    recurrent = isinstance(policy, RecurrentPolicy)
    t_len = min(seq_len, env.episode_length) if recurrent else 1
    n_seq = max(64, -(-n_real // t_len)) if recurrent else n_real
    n_eps = n_seq if recurrent else max(1, -(-n_real // env.episode_length))
    rec = jax.jit(lambda k: rollout_jax(env, policy, k, record_obs=True),
                  compiler_options=env.jit_options)(episode_keys(seed + 31337, n_eps))
    seen = np.asarray(rec["obs"])
    rng = np.random.default_rng(seed)
    if recurrent:
        real = seen[:t_len]
    else:
        flat = seen.reshape(-1, env.observation_size)
        real = flat[rng.permutation(len(flat))[:n_real]][None]
    scale = np.maximum(np.abs(real).max((0, 1)), 1.0)
    n_rand = max(1, n_random // t_len)
    random = rng.uniform(-1.5, 1.5, (t_len, n_rand, env.observation_size)) * scale
    return np.concatenate([real, random], axis=1).astype(np.float32)


def gate_numeric(model: Any, policy: Policy, obs: np.ndarray,
                 recurrent: dict[str, Any] | None = None) -> dict:
    """onnxruntime and the reference evaluator vs the JAX `policy` on the sequences `obs`
    [T, S, O] at every batch size (of sequences); `recurrent`: the file's state layout."""
    sess = ort_session(model.SerializeToString())
    want = np.asarray(jax.jit(lambda o: jax_sequences(policy, o))(jnp.asarray(obs)))
    per_batch = {}
    for bs in BATCH_SIZES:
        n = (obs.shape[1] // bs) * bs
        got = onnx_sequences(sess, obs[:, :n], recurrent, bs)
        per_batch[str(bs)] = float(np.abs(got - want[:, :n]).max())
    ref = ReferenceEvaluator(model)
    ref_diff = float(np.abs(onnx_sequences(ref, obs[:, :64], recurrent) - want[:, :64]).max())
    worst = max(per_batch.values())
    result = {"observations": int(obs.shape[0] * obs.shape[1]), "max_abs_diff": worst,
              "per_batch": per_batch, "reference_evaluator_max_abs_diff": ref_diff,
              "tolerance": TOLERANCE,
              **({"sequences": int(obs.shape[1]), "sequence_length": int(obs.shape[0])}
                 if recurrent is not None else {})}
    if not worst <= TOLERANCE:
        raise GateError("numeric", f"onnxruntime differs from JAX by {worst:.3g} > {TOLERANCE:g} "
                                   f"(per batch size: {per_batch})")
    if not ref_diff <= TOLERANCE:
        raise GateError("numeric", f"onnx.reference differs from JAX by {ref_diff:.3g}")
    return {"passed": True, **result}


def success_band(successes_a: int, successes_b: int, episodes: int) -> int:
    """How far two success counts over `episodes` episodes of one policy may lie apart: one
    episode, or 1.96 standard deviations of the difference of two binomial counts at the pooled
    rate. A contact-rich simulator (the ant) amplifies float32 rounding into another trajectory
    within a few hundred steps, so two bit-different but equal policies succeed in different
    episodes; a smooth one (the point maze) gives equal counts, well inside the band."""
    p = (successes_a + successes_b) / (2 * episodes)
    return max(1, math.ceil(1.96 * math.sqrt(2 * episodes * p * (1 - p))))


def gate_closed_loop(model: Any, env: GoalEnv, policy: Policy, episodes: int, seed: int,
                     recurrent: dict[str, Any] | None = None) -> dict:
    """onnxruntime in the loop (carrying a recurrent file's state) vs the JAX evaluation of
    `policy`, same seeds: the file's actions on the states it met, and the success counts."""
    sess = ort_session(model.SerializeToString())
    keys = episode_keys(seed, episodes)
    jax_eps = jax.device_get(jax.jit(lambda k: rollout_jax(env, policy, k),
                                     compiler_options=env.jit_options)(keys))
    host = rollout_host(env, SessionStepper(sess, recurrent), keys, record_obs=True)
    # what each would do on the states the file met, each episode replayed from its start
    seen = host["obs"].astype(np.float32)
    dev = np.abs(np.asarray(jax.jit(lambda o: jax_sequences(policy, o))(jnp.asarray(seen)))
                 - onnx_sequences(sess, seen, recurrent))
    n_jax, n_onnx = int(jax_eps["success_any"].sum()), int(host["success_any"].sum())
    band = success_band(n_jax, n_onnx, episodes)
    result = {
        "episodes": episodes, "seed": seed,
        "success_episodes_jax": n_jax, "success_episodes_onnx": n_onnx,
        "success_any_jax": float(jax_eps["success_any"].mean()),
        "success_any_onnx": float(host["success_any"].mean()),
        "time_at_goal_jax": float(jax_eps["time_at_goal"].mean()),
        "time_at_goal_onnx": float(host["time_at_goal"].mean()),
        "action_deviation_max": float(dev.max()), "action_deviation_mean": float(dev.mean()),
        "action_tolerance": TOLERANCE, "success_episodes_band": band,
    }
    if not result["action_deviation_max"] <= TOLERANCE:
        raise GateError("closed_loop", f"on the states the ONNX file visited, its actions differ "
                                       f"from JAX's by {dev.max():.3g} > {TOLERANCE:g}")
    if abs(n_jax - n_onnx) > band:
        raise GateError("closed_loop", f"ONNX reached the goal in {n_onnx}/{episodes} episodes, "
                                       f"JAX in {n_jax}/{episodes} (more than {band} apart)")
    return {"passed": True, **result}


def run_gates(model: Any, art: Artifact, episodes: int = 128, seed: int = 0,
              policy: Policy | None = None, obs: np.ndarray | None = None,
              recurrent: dict[str, Any] | None = None) -> dict:
    """All three gates in order against the traced function (`policy`, default
    `art.policy(traceable=True)`) on the parity sequences `obs` (default: drawn here);
    `recurrent` is the file's state layout (`trace.recurrent_io`); raises GateError at the
    first failure."""
    policy = art.policy(traceable=True) if policy is None else policy
    if recurrent is None and isinstance(policy, RecurrentPolicy):
        raise CrlDistillError("run_gates: a recurrent policy needs its file's state layout "
                              "(`recurrent`, from trace.recurrent_io)")
    obs = parity_observations(art.env, policy, seed) if obs is None else obs
    gates = {"checker": gate_checker(model)}
    gates["numeric"] = gate_numeric(model, policy, obs, recurrent)
    gates["closed_loop"] = gate_closed_loop(model, art.env, policy, episodes, seed, recurrent)
    return gates


def gate_robust(data: bytes, out: Path, spec: Perturbation, min_retention: float,
                teacher_time_at_goal: float, episodes: int, seed: int) -> dict:
    """The file as it will be written, in native MuJoCo under `spec`: its time at goal must be
    at least `min_retention` x the clean teacher's (same seeds as the distillation's scoring
    where the teacher figure comes from the student file)."""
    tmp = out.with_name(f".{out.name}.robust-{os.getpid()}.onnx")
    try:
        tmp.write_bytes(data)
        r = evaluate_native(str(tmp), episodes=episodes, seed=seed, perturb=spec)
    finally:
        tmp.unlink(missing_ok=True)
    got = r["native"]["time_at_goal"]
    ratio = got / teacher_time_at_goal if teacher_time_at_goal > 0 else float("nan")
    result = {"perturbation": spec.to_dict(), "episodes": episodes, "seed": seed,
              "native": r["native"], "training_sim": r["brax"],
              "teacher_time_at_goal": teacher_time_at_goal, "retention_time_at_goal": ratio,
              "min_retention": min_retention}
    if not ratio >= min_retention:
        raise GateError("robust", f"native MuJoCo time at goal under {spec.describe()}: {got:.1f}, "
                                  f"{ratio:.2f} x the clean teacher's {teacher_time_at_goal:.1f}, "
                                  f"below --min-retention {min_retention:g}")
    return {"passed": True, **result}
