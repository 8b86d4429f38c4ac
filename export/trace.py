"""Tracing a loaded artifact into ONNX, and the metadata an exported file carries.

    model = trace_policy(artifact)            obs float32 [batch, O] -> action [batch, A]
    set_metadata(model, build_metadata(artifact, golden, gates))

A recurrent student's file also takes and returns its hidden state, as rsl_rl-style deploy
code expects: (obs, h_in [, c_in]) -> (action, h_out [, c_out]), the state [batch, H], or
[1, batch, H] with io names "rsl_rl" (`recurrent_io`; the metadata's `recurrent` entry).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax2onnx import to_onnx

from crl_distill import __version__
from crl_distill.artifacts import Artifact
from crl_distill.checkpoint import params_sha256
from crl_distill.errors import CrlDistillError
from crl_distill.evaluation import Policy, RecurrentPolicy
from crl_distill.fileio import provenance
from crl_distill.runtime import METADATA_PREFIX

POLICY_FORMAT = "crl-distill-policy"
#: graph input and output names per convention: ours, and rsl_rl-style C++ controllers'
IO_NAMES = {"crl": ("obs", "action"), "rsl_rl": ("obs", "actions")}
DEFAULT_OPSET = 23
#: the reset rule, as the file states it
RESET_RULE = ("zero every state input at an episode's first step (start, and after a "
              "termination); otherwise feed the previous call's state outputs")


def recurrent_io(art: Artifact, io_names: str = "crl") -> dict[str, Any] | None:
    """The hidden state's names, shape and reset rule for a recurrent student (the metadata's
    `recurrent` entry, which `runtime.RecurrentState` reads); None for every other policy."""
    scfg = art.student.config if art.student is not None else None
    if scfg is None or not scfg.recurrent:
        return None
    n = scfg.carry_size // scfg.width
    return {"cell": scfg.cell, "hidden_size": scfg.width,
            "state_inputs": ["h_in", "c_in"][:n], "state_outputs": ["h_out", "c_out"][:n],
            "state_shape": [1, "batch", scfg.width] if io_names == "rsl_rl" else ["batch", scfg.width],
            "reset": RESET_RULE}


def trace_policy(art: Artifact, io_names: str = "crl", opset: int = DEFAULT_OPSET,
                 policy: Policy | None = None) -> Any:
    """The artifact's policy (or `policy`, built from it with `traceable=True`) as an
    onnx.ModelProto: obs float32 [batch, O] -> action [batch, A], with a recurrent student's
    state in and out as `recurrent_io` names them."""
    policy = art.policy(traceable=True) if policy is None else policy
    name = f"crl_distill_{art.kind}_{art.name}"
    spec = recurrent_io(art, io_names)
    if spec is None:
        return trace_onnx(policy, art.env.observation_size, name, io_names, opset)
    return _trace_recurrent(policy, art.env.observation_size, spec, name, io_names, opset)


def _trace_recurrent(policy: RecurrentPolicy, obs_size: int, spec: dict[str, Any], model_name: str,
                     io_names: str, opset: int) -> Any:
    """(obs, *state) -> (action, *state'), the flat carry split into [h, c] per `spec`."""
    inp, out = IO_NAMES[io_names]
    h_size, shape = spec["hidden_size"], tuple(spec["state_shape"])
    to_flat = (lambda x: x[0]) if len(shape) == 3 else (lambda x: x)
    from_flat = (lambda x: x[None]) if len(shape) == 3 else (lambda x: x)

    def step(obs, *state):
        carry, action = policy.step(jnp.concatenate([to_flat(s) for s in state], -1), obs)
        parts = [carry[:, i * h_size:(i + 1) * h_size] for i in range(len(state))]
        return (action, *(from_flat(p) for p in parts))

    return _to_onnx(step, [("batch", obs_size)] + [shape] * len(spec["state_inputs"]),
                    [inp, *spec["state_inputs"]], [out, *spec["state_outputs"]], model_name, opset)


def trace_onnx(policy: Callable, obs_size: int, model_name: str, io_names: str = "crl",
               opset: int = DEFAULT_OPSET) -> Any:
    """A stateless policy obs float32 [batch, obs_size] -> action as ONNX."""
    inp, out = IO_NAMES[io_names]
    return _to_onnx(policy, [("batch", obs_size)], [inp], [out], model_name, opset)


def _to_onnx(fn: Callable, shapes: list[tuple], inputs: list[str], outputs: list[str],
             model_name: str, opset: int) -> Any:
    """The one ONNX tracing call (float32 inputs of `shapes`, "batch" symbolic)."""
    try:
        model = to_onnx(fn, shapes, input_names=inputs, output_names=outputs,
                        model_name=model_name, normalization_mode="prefer_native", opset=opset)
    except Exception as e:  # the tracer names the op it cannot emit at this opset
        raise CrlDistillError(f"cannot export at opset {opset}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    return drop_intermediate_shapes(model)


def trace_critic(art: Artifact) -> Any:
    """A student's encoders: (state_action [batch, S+A], goal [batch, G]) -> (phi, psi) [batch, D]."""
    env = art.env
    phi, psi = art.student.encoders()
    return drop_intermediate_shapes(
        to_onnx(lambda sa, g: (phi(sa), psi(g)),
                [("batch", env.state_size + env.action_size), ("batch", env.goal_size)],
                input_names=["state_action", "goal"], output_names=["phi", "psi"],
                model_name=f"crl_distill_{art.kind}_{art.name}_critic",
                normalization_mode="prefer_native"))


def drop_intermediate_shapes(model: Any) -> Any:
    """Remove the traced file's shape annotations of intermediate tensors (`value_info`, in
    every graph and subgraph); returns `model`, changed in place.

    jax2onnx annotates them with the symbolic `batch` dim. Strict engines such as tract take
    them as facts: with the input fixed to a concrete batch (`1,O,f32`, as robots deploy) the
    first Gemm's output `1` cannot unify with the annotated `batch` and loading fails.
    onnxruntime ignores them, so they carry nothing an engine needs; shapes follow from the
    inputs. Graph inputs and outputs keep their symbolic `batch` (dynamic batch still works);
    names, opset and weights are untouched."""
    def strip(graph: Any) -> None:
        del graph.value_info[:]
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    strip(attr.g)
                for g in attr.graphs:
                    strip(g)

    strip(model.graph)
    return model


def has_critic(art: Artifact) -> bool:
    """Whether the export also writes the encoders (students distilled with them)."""
    return art.student is not None and art.student.config.encoders


def trace_ungated(art: Artifact, reason: str, io_names: str = "crl") -> Any:
    """The traced policy with its metadata but no gates run (`gates_skipped`, with `reason`): for
    measuring a file (latency), never for shipping it."""
    model = trace_policy(art, io_names)
    set_metadata(model, build_metadata(art, [], {"skipped": True, "reason": reason}, io_names))
    return model


def set_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store each entry JSON-encoded under `crl_distill.<key>` in metadata_props."""
    del model.metadata_props[:]
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = METADATA_PREFIX + k, json.dumps(v)


def provenance_info(art: Artifact) -> dict[str, Any]:
    """What the file was made from: the teacher's settings and acting, or the student's
    settings, its observed input range and its teacher (by file name and hash)."""
    if art.teacher is not None:
        return {"teacher": art.teacher.config.to_dict(), "teacher_epoch": art.teacher.epoch,
                "acting": art.acting.describe(), "teacher_acting": art.acting.to_dict()}
    s = art.student
    return {"student": dataclasses.asdict(s.config),
            # per-element input range seen in distillation: the runtime's monitor
            "obs_range": s.meta.get("obs_range"),
            "teacher": s.meta.get("teacher"),
            # how the teacher acted when it labelled this student
            "teacher_acting": s.meta.get("teacher_acting"),
            **provenance("teacher_source", s.meta.get("teacher_source")),
            "distill": s.meta.get("distill")}


def build_metadata(art: Artifact, golden: list[dict], gates: dict, io_names: str = "crl"
                   ) -> dict[str, Any]:
    env = art.env
    rec = recurrent_io(art, io_names)
    facts = env.describe()
    spec = ({"observation_spec": {**facts["student_obs"],
                                  "teacher_state_size": facts["teacher_state_size"]},
             "input": "obs = concat(kept state now, kept state at t-1 .. t-history, goal), "
                      "float32 [batch, observation_size]; see observation_spec"}
            if "student_obs" in facts else {})
    return {
        "format": POLICY_FORMAT, "version": 1, "kind": art.kind, "name": art.name,
        "env": env.name, "observation_size": env.observation_size, "state_size": env.state_size,
        "goal_indices": list(env.goal_indices), "goal_size": env.goal_size,
        "action_size": env.action_size, "action_bounds": list(env.action_bounds),
        "success_threshold": env.success_threshold, "control_period": env.control_period,
        "episode_length": env.episode_length, "layout": env.layout,
        "input": "obs = concat(state, goal), float32 [batch, observation_size]",
        "output": "action = tanh(mean), float32 [batch, action_size]",
        "crl_distill_version": __version__, "params_sha256": params_sha256(art.params),
        **provenance("source", art.source),
        **{k: v for k, v in provenance_info(art).items() if v is not None},
        "golden": golden, "gates": gates, "gates_skipped": bool(gates.get("skipped")), **spec,
        # a recurrent student: its state's names, shapes and reset rule; its golden pairs are
        # one sequence from a zero state, replayed in order
        **({"recurrent": rec} if rec is not None else {}),
        # Element by element, and as the flat comma-separated keys C++ controllers read.
        "interface": (face := env.interface()),
        "observation_names": ",".join(e["name"] for e in face["observation"]),
        "action_names": ",".join(e["name"] for e in face["action"]),
        "action_scale": ",".join(repr(float(e["high"])) for e in face["action"]),
        # The robot's model for sim-to-sim runs in native MuJoCo (`crl-distill eval --sim mujoco`,
        # examples/robot_controller.py); absent where the env has none.
        **({"native": native} if (native := env.native_spec()) else {}),
    }
