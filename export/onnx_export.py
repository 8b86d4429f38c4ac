"""Export a student (or teacher) policy to ONNX and prove it behaves like the JAX policy.

    exportable = resolve(path)                # student file/dir, or teacher run/checkpoint
    result = export(path, out="policy.onnx")  # trace -> metadata -> gates -> atomic write

Gates (each failure names the gate; nothing is written at the target path):
  1. checker: onnx.checker (full) and strict shape inference;
  2. numeric: onnxruntime vs JAX, max |diff| <= 1e-5 on >= 1000 observations (real rollout
     states + random ones) at batch sizes 1, 2, 7, 64; onnx.reference.ReferenceEvaluator agrees;
  3. closed_loop: onnxruntime drives the env over the JAX evaluation's seeds; success counts
     agree within one episode; per-step action deviation is reported.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill import __version__
from crl_distill.checkpoint import params_sha256, peek_format
from crl_distill.dirlock import releases_locks
from crl_distill.distill import student_set
from crl_distill.envs import GoalEnv, make
from crl_distill.envs.observed import observed
from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.evaluation import episode_keys, rollout_host, rollout_jax
from crl_distill.export import c_export, exported
from crl_distill.fileio import atomic_write_bytes, provenance
from crl_distill.runtime import METADATA_PREFIX
from crl_distill.teacher.run_dir import checkpoint_dir, run_of

POLICY_FORMAT = "crl-distill-policy"
BATCH_SIZES = (1, 2, 7, 64)
TOLERANCE = 1e-5
GOLDEN_PAIRS = 4
# Deeper teachers export as one ONNX Loop over blocks. Up to here the graph is unrolled: with
# native LayerNormalization it runs ~3x faster in onnxruntime (depth 1000: 28 vs 96 ms at batch
# 1) at the cost of a longer export (65 vs 12 s).
DEEP_EXPORT_DEPTH = 1024


class GateError(CrlDistillError):
    """An export gate failed; `gate` names it."""

    def __init__(self, gate: str, message: str):
        super().__init__(f"export gate '{gate}' failed: {message}")
        self.gate = gate


@dataclass
class Exportable:
    """A policy ready to trace: obs [B, O] -> action [B, A] in plain jnp (no nn.scan)."""

    kind: str  # "student" | "teacher"
    name: str
    env: GoalEnv
    policy: Callable[[jax.Array], jax.Array]
    params: Any
    source: Path
    info: dict = field(default_factory=dict)
    critic: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]] | None = None


def _student_exportable(path: Path) -> Exportable:
    from crl_distill.student.model import load_student

    s = load_student(path)
    env = observed(make(s.env_name), s.config.obs_spec)
    critic = None
    if s.config.encoders:
        def critic(state_action, goal, s=s):
            return (s.modules.phi.apply(s.params["phi"], state_action),
                    s.modules.psi.apply(s.params["psi"], goal))
    return Exportable(kind="student", name=s.config.name, env=env, policy=s.policy_fn(),
                      params=s.params, source=path, critic=critic,
                      info={"student": dataclasses.asdict(s.config),
                            # per-element input range seen in distillation: the runtime's monitor
                            "obs_range": s.meta.get("obs_range"),
                            "teacher": s.meta.get("teacher"),
                            **provenance("teacher_source", s.meta.get("teacher_source")),
                            "distill": s.meta.get("distill")})


def traceable_teacher_policy(cfg: Any, actor_params: Any, action_size: int) -> Callable:
    """A teacher actor's deterministic policy written with `apply_unrolled`: nn.scan cannot be
    traced with a symbolic batch, and this is the same function (deep nets become one Loop)."""
    from crl_distill.teacher.networks import apply_unrolled

    net, scan = actor_params["params"]["net"], cfg.depth > DEEP_EXPORT_DEPTH
    return lambda obs: jnp.tanh(apply_unrolled(cfg, net, obs, scan=scan)[..., :action_size])


def traceable_select_policy(t: Any, k: int, seed: int = 0) -> Callable:
    """`Teacher.policy_fn(k, seed)` written with `apply_unrolled` (actor, phi and psi in one
    graph, the K fixed noise rows as a constant), for ONNX tracing."""
    from crl_distill.teacher.crl import best_candidate, selection_noise
    from crl_distill.teacher.networks import apply_unrolled, squash_log_std

    cfg, env, a = t.config, t.env, t.env.action_size
    noise = selection_noise(seed, k, a)
    actor = t.params["actor"]["params"]["net"]
    phi_p, psi_p = (t.params["critic"][n]["params"] for n in ("phi", "psi"))

    def net(c, params, x):
        return apply_unrolled(c, params, x, scan=c.depth > DEEP_EXPORT_DEPTH)

    def policy(obs):
        s, g = obs[:, : env.state_size], obs[:, env.state_size:]
        out = net(cfg.actor, actor, obs)
        return best_candidate(out[..., :a], squash_log_std(out[..., a:]), s, g, noise,
                              lambda sa: net(cfg.critic, phi_p, sa),
                              lambda goal: net(cfg.critic, psi_p, goal), cfg.energy)

    return policy


def teacher_exportable(t: Any, traceable: bool = True, act_samples: int = 1) -> Exportable:
    """A loaded `Teacher` as an Exportable: its deterministic actor, or with `act_samples` K > 1
    the best of K fixed candidates under its critic. `traceable=False` gives the scan-built
    network for JAX evaluation (constant compile time) instead of the unrolled one."""
    cfg = t.config.actor
    info: dict[str, Any] = {"teacher": t.config.to_dict(), "teacher_epoch": t.epoch}
    if act_samples > 1:
        policy = traceable_select_policy(t, act_samples) if traceable else t.policy_fn(act_samples)
        info["acting"] = (f"critic-selected: the best of {act_samples} fixed actor candidates "
                          f"under f(phi(s, a), psi(g)) (noise seed 0, row 0 = the mean action)")
        params = t.params
    else:
        policy = traceable_teacher_policy(cfg, t.params["actor"], t.env.action_size)
        if not traceable:  # evaluation: the scan-built network compiles in constant time
            policy = t.policy_fn()
        params = t.params["actor"]
    name = f"teacher-d{cfg.depth}" + (f"-k{act_samples}" if act_samples > 1 else "")
    return Exportable(kind="teacher", name=name, env=t.env, policy=policy, params=params,
                      source=t.source, info=info)


def resolve(source: str | Path, student: str | None = None, traceable: bool = True,
            act_samples: int = 1) -> Exportable:
    """A student file, a student directory, a teacher run directory or a teacher checkpoint.

    `traceable=False` gives a teacher policy for JAX evaluation rather than ONNX tracing;
    `act_samples` K > 1 makes a teacher act with its critic (best of K fixed candidates).
    """
    if act_samples < 1:
        raise CrlDistillError(f"act samples must be >= 1, got {act_samples}")
    p = Path(source)
    ex = _resolve(p, student, traceable, act_samples)
    if act_samples > 1 and ex.kind != "teacher":
        raise CrlDistillError("acting with the critic (--act-samples > 1) needs a teacher; a "
                              "student is a plain MLP (distill it with --label critic instead)")
    return ex


def _resolve(p: Path, student: str | None, traceable: bool, act_samples: int) -> Exportable:
    from crl_distill.teacher.train import load_teacher

    if p.is_dir():
        if student_set.is_student_set(p):
            return _student_exportable(student_set.pick(p, student))
        if checkpoint_dir(p).is_dir():
            return teacher_exportable(load_teacher(p), traceable, act_samples)
        raise CrlDistillError(f"{p}: neither a student directory nor a teacher run directory")
    if not p.exists():
        raise CrlDistillError(f"{p}: no such file or directory")
    fmt = peek_format(p)
    if fmt == "crl-distill-student":
        return _student_exportable(p)
    if fmt == "crl-distill-teacher":
        return teacher_exportable(load_teacher(p), traceable, act_samples)
    raise CrlDistillError(f"{p}: a {fmt!r} file cannot be exported")


# ----------------------------------------------------------------------------------------------
# Tracing and metadata
# ----------------------------------------------------------------------------------------------
#: graph input and output names per convention: ours, and rsl_rl-style C++ controllers'
IO_NAMES = {"crl": ("obs", "action"), "rsl_rl": ("obs", "actions")}
DEFAULT_OPSET = 23


def trace_policy(ex: Exportable, io_names: str = "crl", opset: int = DEFAULT_OPSET):
    """obs float32 [batch, O] -> action [batch, A] as an onnx.ModelProto."""

    return trace_onnx(ex.policy, ex.env.observation_size, f"crl_distill_{ex.kind}_{ex.name}",
                      io_names, opset)


def trace_ungated(ex: Exportable, reason: str) -> Any:
    """The traced policy with its metadata but no gates run (`gates_skipped`, with `reason`): for
    measuring a file (latency), never for shipping it."""
    model = trace_policy(ex)
    set_metadata(model, build_metadata(ex, [], {"skipped": True, "reason": reason}))
    return model


def trace_onnx(policy: Callable, obs_size: int, model_name: str, io_names: str = "crl",
               opset: int = DEFAULT_OPSET):
    """The one ONNX tracing call: policy obs float32 [batch, obs_size] -> action."""
    from jax2onnx import to_onnx

    inp, out = IO_NAMES[io_names]
    try:
        return to_onnx(policy, [("batch", obs_size)], input_names=[inp], output_names=[out],
                       model_name=model_name, normalization_mode="prefer_native", opset=opset)
    except Exception as e:  # the tracer names the op it cannot emit at this opset
        raise CrlDistillError(f"cannot export at opset {opset}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None


def trace_critic(ex: Exportable):
    """(state_action [batch, S+A], goal [batch, G]) -> (phi, psi) [batch, D]."""
    from jax2onnx import to_onnx

    env = ex.env
    return to_onnx(ex.critic, [("batch", env.state_size + env.action_size),
                               ("batch", env.goal_size)],
                   input_names=["state_action", "goal"], output_names=["phi", "psi"],
                   model_name=f"crl_distill_{ex.kind}_{ex.name}_critic",
                   normalization_mode="prefer_native")


def set_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store each entry JSON-encoded under `crl_distill.<key>` in metadata_props."""
    del model.metadata_props[:]
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = METADATA_PREFIX + k, json.dumps(v)


def build_metadata(ex: Exportable, golden: list[dict], gates: dict) -> dict[str, Any]:
    env = ex.env
    facts = env.describe()
    spec = ({"observation_spec": {**facts["student_obs"],
                                  "teacher_state_size": facts["teacher_state_size"]},
             "input": "obs = concat(kept state now, kept state at t-1 .. t-history, goal), "
                      "float32 [batch, observation_size]; see observation_spec"}
            if "student_obs" in facts else {})
    return {
        "format": POLICY_FORMAT, "version": 1, "kind": ex.kind, "name": ex.name,
        "env": env.name, "observation_size": env.observation_size, "state_size": env.state_size,
        "goal_indices": list(env.goal_indices), "goal_size": env.goal_size,
        "action_size": env.action_size, "action_bounds": list(env.action_bounds),
        "success_threshold": env.success_threshold, "control_period": env.control_period,
        "episode_length": env.episode_length, "layout": env.layout,
        "input": "obs = concat(state, goal), float32 [batch, observation_size]",
        "output": "action = tanh(mean), float32 [batch, action_size]",
        "crl_distill_version": __version__, "params_sha256": params_sha256(ex.params),
        **provenance("source", ex.source), **{k: v for k, v in ex.info.items() if v is not None},
        "golden": golden, "gates": gates, "gates_skipped": bool(gates.get("skipped")), **spec,
        # Element by element, and as the flat comma-separated keys C++ controllers read.
        "interface": (face := env.interface()),
        "observation_names": ",".join(e["name"] for e in face["observation"]),
        "action_names": ",".join(e["name"] for e in face["action"]),
        "action_scale": ",".join(repr(float(e["high"])) for e in face["action"]),
        # The robot's model for sim-to-sim runs in native MuJoCo (`crl-distill eval --sim mujoco`,
        # examples/robot_controller.py); absent where the env has none.
        **({"native": native} if (native := env.native_spec()) else {}),
    }


# ----------------------------------------------------------------------------------------------
# Gates
# ----------------------------------------------------------------------------------------------
def gate_checker(model: Any) -> dict:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise GateError("checker", str(e).splitlines()[0][:300]) from None
    return {"passed": True}


def _ort_session(model_bytes: bytes):
    from crl_distill.runtime import _import_ort

    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def parity_observations(ex: Exportable, seed: int, n_real: int = 1024, n_random: int = 256):
    """Real states from JAX rollouts of the policy plus random observations, [N, O] float32."""
    env = ex.env
    n_eps = max(1, -(-n_real // env.episode_length))
    rec = jax.jit(lambda k: rollout_jax(env, ex.policy, k, record_obs=True),
                  compiler_options=env.jit_options)(
        episode_keys(seed + 31337, n_eps))
    real = np.asarray(rec["obs"]).reshape(-1, env.observation_size)
    rng = np.random.default_rng(seed)
    real = real[rng.permutation(len(real))[:n_real]]
    scale = np.maximum(np.abs(real).max(0), 1.0)
    random = (rng.uniform(-1.5, 1.5, (n_random, env.observation_size)) * scale).astype(np.float32)
    return np.concatenate([real, random]).astype(np.float32)


def gate_numeric(model: Any, ex: Exportable, obs: np.ndarray) -> dict:
    """onnxruntime and the reference evaluator vs JAX on `obs` at every batch size."""
    from onnx.reference import ReferenceEvaluator

    sess = _ort_session(model.SerializeToString())
    want = np.asarray(jax.jit(ex.policy)(jnp.asarray(obs)))
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


def gate_closed_loop(model: Any, ex: Exportable, episodes: int, seed: int) -> dict:
    """onnxruntime in the loop vs the JAX evaluation, same seeds."""
    sess = _ort_session(model.SerializeToString())
    keys = episode_keys(seed, episodes)
    jax_eps = jax.device_get(jax.jit(lambda k: rollout_jax(ex.env, ex.policy, k),
                                     compiler_options=ex.env.jit_options)(keys))
    host = rollout_host(ex.env, lambda o: sess.run(None, {"obs": o.astype(np.float32)})[0], keys,
                        record_obs=True)
    seen = host["obs"].reshape(-1, ex.env.observation_size)
    dev = np.abs(np.asarray(jax.jit(ex.policy)(jnp.asarray(seen)))
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


def run_gates(model: Any, ex: Exportable, episodes: int = 128, seed: int = 0) -> dict:
    """All three gates in order; raises GateError at the first failure."""
    gates = {"checker": gate_checker(model)}
    gates["numeric"] = gate_numeric(model, ex, parity_observations(ex, seed))
    gates["closed_loop"] = gate_closed_loop(model, ex, episodes, seed)
    return gates


# ----------------------------------------------------------------------------------------------
# The export entry point
# ----------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    report_path: Path
    report: dict
    critic_path: Path | None = None
    #: policy.h and policy.c beside the ONNX file (`fmt="c"`)
    c_paths: list[Path] = field(default_factory=list)
    #: what was traced, for callers that measure it further (latency) without loading it again
    exportable: Exportable | None = None


FORMATS = ("onnx", "c")


@releases_locks
def export(source: str | Path, out: str | Path | None = None, student: str | None = None,
           skip_gates: bool = False, episodes: int = 128, seed: int = 0, fmt: str = "onnx",
           cc: str | None = None, io_names: str = "crl", opset: int = DEFAULT_OPSET,
           act_samples: int = 1) -> ExportResult:
    """Trace, check and write `out` (default: policy.onnx next to the source) atomically.

    fmt="c" also writes a dependency-free C99 policy.h / policy.c beside it (students only),
    gated against the ONNX file (`export.c_export`). On a failed gate nothing is written at
    `out`; export_report.json beside it names the gate.
    """
    if episodes < 1:
        raise CrlDistillError("episodes must be >= 1")
    require_choice("format", fmt, FORMATS)
    require_choice("io names", io_names, tuple(IO_NAMES))
    if not 13 <= opset <= DEFAULT_OPSET:
        raise CrlDistillError(f"opset must be in [13, {DEFAULT_OPSET}], got {opset}")
    ex = resolve(source, student, act_samples=act_samples)
    if fmt == "c":
        if ex.kind != "student":
            raise CrlDistillError("C export is for students (plain MLPs); export the teacher as "
                                  "ONNX, or distill it first")
        c_export.find_cc(cc)  # fail before tracing when there is no compiler
    src_dir = run_of(ex.source)
    out = Path(out) if out is not None else exported.default_file(src_dir, ex.kind)
    if out.is_dir():
        raise CrlDistillError(f"{out} is a directory; give a file path for --out")
    exported.lock(out)
    t0 = time.perf_counter()
    model = trace_policy(ex, io_names, opset)
    trace_s = time.perf_counter() - t0
    obs = np.asarray(parity_observations(ex, seed, n_real=GOLDEN_PAIRS, n_random=0))[:GOLDEN_PAIRS]
    act = np.asarray(jax.jit(ex.policy)(jnp.asarray(obs)))
    golden = [{"obs": o.tolist(), "action": a.tolist()} for o, a in zip(obs, act, strict=True)]
    # File names, not paths: the report may travel with the file (see fileio.provenance).
    report: dict[str, Any] = {**provenance("source", ex.source), "kind": ex.kind, "name": ex.name,
                              "env": ex.env.name, "target": out.name, "trace_s": trace_s}
    if skip_gates:
        gates: dict[str, Any] = {"skipped": True, "reason": "skipped by --skip-gates"}
    else:
        try:
            gates = run_gates(model, ex, episodes, seed)
        except GateError as e:
            report.update({"passed": False, "failed_gate": e.gate, "error": str(e)})
            exported.write_report(out, report)
            raise
    from crl_distill.runtime import weights_sha256

    meta = build_metadata(ex, golden, gates)
    set_metadata(model, {**meta, "io_names": io_names, "opset": opset,
                         "weights_sha256": weights_sha256(model)})
    data = model.SerializeToString()
    critic_path = None
    if ex.critic is not None:
        critic = trace_critic(ex)
        gate_checker(critic)
        set_metadata(critic, {**meta, "golden": [], "gates": {"checker": {"passed": True}},
                              "gates_skipped": False, "format": POLICY_FORMAT + "-critic"})
        critic_path = exported.critic_file(out)
    c_paths: list[Path] = []
    if fmt == "c":
        c_meta = {k: v for k, v in meta.items()
                  if k not in ("golden", "gates", "gates_skipped", "native")}
        prefix = c_export.c_prefix(out.stem)
        header, source_c = c_export.c_sources(ex.info["student"], ex.params["policy"], c_meta,
                                              prefix)
        if skip_gates:
            report["c"] = {"skipped": True}
        else:
            try:
                report["c"] = c_export.c_gates(header, source_c, _ort_session(data),
                                               parity_observations(ex, seed), golden, cc, prefix)
            except CrlDistillError as e:
                report.update({"passed": False, "failed_gate": "c", "error": str(e)})
                exported.write_report(out, report)
                raise
    atomic_write_bytes(out, data)
    if critic_path is not None:
        atomic_write_bytes(critic_path, critic.SerializeToString())
    if fmt == "c":
        c_paths = c_export.write_c(out.parent, header, source_c, prefix=prefix,
                                   model_xml=meta["native"]["mjcf"] if "native" in meta else None)
        report["c_files"] = [p.name for p in c_paths]
    report.update({"passed": not skip_gates, "gates": gates, "bytes": len(data),
                   "critic": critic_path.name if critic_path else None,
                   "params_sha256": params_sha256(ex.params), "seconds": time.perf_counter() - t0})
    return ExportResult(path=out, report_path=exported.write_report(out, report), report=report,
                        critic_path=critic_path, c_paths=c_paths, exportable=ex)


# ----------------------------------------------------------------------------------------------
# One evaluator for every artifact
# ----------------------------------------------------------------------------------------------
def evaluate_artifact(source: str | Path, env: str | None = None, episodes: int = 256,
                      seed: int = 0, student: str | None = None, act_samples: int = 1) -> dict:
    """Teacher run/checkpoint, student file/dir or exported .onnx on the same seeded episodes."""
    from crl_distill.evaluation import evaluate, summarize

    p = Path(source)
    if episodes < 1:
        raise CrlDistillError("episodes must be >= 1")
    if p.suffix == ".onnx":
        from crl_distill.runtime import OnnxPolicy

        policy = OnnxPolicy(p)
        target = make(env or policy.env)
        _check_env_fits(target, policy.env_state_size + policy.goal_size, policy.action_size,
                        policy.env)
        policy.reset()
        per_ep = rollout_host(target, policy.act_env, episode_keys(seed, episodes))
        kind, name, trained_on = "onnx", policy.metadata.get("name"), policy.env
        summary = summarize(per_ep)
    else:
        ex = resolve(p, student, traceable=False, act_samples=act_samples)
        target = observed(make(env), getattr(ex.env, "spec", None)) if env else ex.env
        _check_env_fits(target, ex.env.observation_size, ex.env.action_size, ex.env.name)
        kind, name, trained_on = ex.kind, ex.name, ex.env.name
        summary = evaluate(target, ex.policy, episodes, seed)
    return {"source": str(p), "kind": kind, "name": name, "env": target.name,
            "trained_on": trained_on, "seed": seed, **summary}


def _check_env_fits(env: GoalEnv, obs_size: int, action_size: int, trained_on: str) -> None:
    if env.observation_size != obs_size or env.action_size != action_size:
        raise CrlDistillError(
            f"env mismatch: the policy was made for {trained_on!r} (obs {obs_size}, action "
            f"{action_size}); {env.name!r} has obs {env.observation_size}, action "
            f"{env.action_size}")
