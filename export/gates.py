"""The gates an exported file passes before it is written (each failure names its gate).

  1. checker: onnx.checker (full) and strict shape inference;
  2. numeric: onnxruntime vs JAX, max |diff| <= 1e-5 on >= 1000 observations (real rollout
     states + random ones) at batch sizes 1, 2, 7, 64; onnx.reference.ReferenceEvaluator agrees;
  3. closed_loop: onnxruntime drives the env over the JAX evaluation's seeds; success counts
     agree within one episode; per-step action deviation is reported;
  4. robust (only when asked: `export(..., robust=SPEC, min_retention=R)`): the file in native
     MuJoCo under a perturbation spec keeps >= R x the clean teacher's time at goal.

The JAX side of every comparison is the function that was traced (`Artifact.policy(traceable=True)`).
"""

from __future__ import annotations

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
from crl_distill.evaluation import BatchPolicy, episode_keys, evaluate_native, rollout_host, rollout_jax
from crl_distill.perturb import Perturbation
from crl_distill.runtime import _import_ort

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


def parity_observations(env: GoalEnv, policy: BatchPolicy, seed: int, n_real: int = 1024,
                        n_random: int = 256) -> np.ndarray:
    """Real states from JAX rollouts of the policy plus random observations, [N, O] float32."""
    n_eps = max(1, -(-n_real // env.episode_length))
    rec = jax.jit(lambda k: rollout_jax(env, policy, k, record_obs=True),
                  compiler_options=env.jit_options)(
        episode_keys(seed + 31337, n_eps))
    real = np.asarray(rec["obs"]).reshape(-1, env.observation_size)
    rng = np.random.default_rng(seed)
    real = real[rng.permutation(len(real))[:n_real]]
    scale = np.maximum(np.abs(real).max(0), 1.0)
    random = (rng.uniform(-1.5, 1.5, (n_random, env.observation_size)) * scale).astype(np.float32)
    return np.concatenate([real, random]).astype(np.float32)


def gate_numeric(model: Any, policy: BatchPolicy, obs: np.ndarray) -> dict:
    """onnxruntime and the reference evaluator vs the JAX `policy` on `obs` at every batch size."""
    sess = ort_session(model.SerializeToString())
    want = np.asarray(jax.jit(policy)(jnp.asarray(obs)))
    per_batch = {}
    for bs in BATCH_SIZES:
        n = (len(obs) // bs) * bs
        got = np.concatenate([sess.run(None, {"obs": obs[i:i + bs]})[0] for i in range(0, n, bs)])
        per_batch[str(bs)] = float(np.abs(got - want[:n]).max())
    ref = ReferenceEvaluator(model)
    sub = obs[:64]
    ref_diff = float(np.abs(ref.run(None, {"obs": sub})[0] - want[:64]).max())
    worst = max(per_batch.values())
    result = {"observations": int(len(obs)), "max_abs_diff": worst, "per_batch": per_batch,
              "reference_evaluator_max_abs_diff": ref_diff, "tolerance": TOLERANCE}
    if not worst <= TOLERANCE:
        raise GateError("numeric", f"onnxruntime differs from JAX by {worst:.3g} > {TOLERANCE:g} "
                                   f"(per batch size: {per_batch})")
    if not ref_diff <= TOLERANCE:
        raise GateError("numeric", f"onnx.reference differs from JAX by {ref_diff:.3g}")
    return {"passed": True, **result}


def gate_closed_loop(model: Any, env: GoalEnv, policy: BatchPolicy, episodes: int, seed: int
                     ) -> dict:
    """onnxruntime in the loop vs the JAX evaluation of `policy`, same seeds."""
    sess = ort_session(model.SerializeToString())
    keys = episode_keys(seed, episodes)
    jax_eps = jax.device_get(jax.jit(lambda k: rollout_jax(env, policy, k),
                                     compiler_options=env.jit_options)(keys))
    host = rollout_host(env, lambda o: sess.run(None, {"obs": o.astype(np.float32)})[0], keys,
                        record_obs=True)
    seen = host["obs"].reshape(-1, env.observation_size)
    dev = np.abs(np.asarray(jax.jit(policy)(jnp.asarray(seen)))
                 - np.concatenate([sess.run(None, {"obs": seen[i:i + 1024]})[0]
                                   for i in range(0, len(seen), 1024)]))
    n_jax, n_onnx = int(jax_eps["success_any"].sum()), int(host["success_any"].sum())
    result = {
        "episodes": episodes, "seed": seed,
        "success_episodes_jax": n_jax, "success_episodes_onnx": n_onnx,
        "success_any_jax": float(jax_eps["success_any"].mean()),
        "success_any_onnx": float(host["success_any"].mean()),
        "time_at_goal_jax": float(jax_eps["time_at_goal"].mean()),
        "time_at_goal_onnx": float(host["time_at_goal"].mean()),
        "action_deviation_max": float(dev.max()), "action_deviation_mean": float(dev.mean()),
    }
    if abs(n_jax - n_onnx) > 1:
        raise GateError("closed_loop", f"ONNX reached the goal in {n_onnx}/{episodes} episodes, "
                                       f"JAX in {n_jax}/{episodes}")
    return {"passed": True, **result}


def run_gates(model: Any, art: Artifact, episodes: int = 128, seed: int = 0,
              policy: BatchPolicy | None = None, obs: np.ndarray | None = None) -> dict:
    """All three gates in order against the traced function (`policy`, default
    `art.policy(traceable=True)`) on the parity observations `obs` (default: drawn here);
    raises GateError at the first failure."""
    policy = art.policy(traceable=True) if policy is None else policy
    obs = parity_observations(art.env, policy, seed) if obs is None else obs
    gates = {"checker": gate_checker(model)}
    gates["numeric"] = gate_numeric(model, policy, obs)
    gates["closed_loop"] = gate_closed_loop(model, art.env, policy, episodes, seed)
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
