"""Tracing a loaded artifact into ONNX, and the metadata an exported file carries.

    model = trace_policy(artifact)            obs float32 [batch, O] -> action [batch, A]
    set_metadata(model, build_metadata(artifact, golden, gates))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from jax2onnx import to_onnx

from crl_distill import __version__
from crl_distill.artifacts import Artifact
from crl_distill.checkpoint import params_sha256
from crl_distill.errors import CrlDistillError
from crl_distill.fileio import provenance
from crl_distill.runtime import METADATA_PREFIX

POLICY_FORMAT = "crl-distill-policy"
#: graph input and output names per convention: ours, and rsl_rl-style C++ controllers'
IO_NAMES = {"crl": ("obs", "action"), "rsl_rl": ("obs", "actions")}
DEFAULT_OPSET = 23


def trace_policy(art: Artifact, io_names: str = "crl", opset: int = DEFAULT_OPSET,
                 policy: Callable | None = None) -> Any:
    """The artifact's policy (or `policy`, built from it with `traceable=True`) as an
    onnx.ModelProto: obs float32 [batch, O] -> action [batch, A]."""
    policy = art.policy(traceable=True) if policy is None else policy
    return trace_onnx(policy, art.env.observation_size,
                      f"crl_distill_{art.kind}_{art.name}", io_names, opset)


def trace_onnx(policy: Callable, obs_size: int, model_name: str, io_names: str = "crl",
               opset: int = DEFAULT_OPSET) -> Any:
    """The one ONNX tracing call: policy obs float32 [batch, obs_size] -> action."""
    inp, out = IO_NAMES[io_names]
    try:
        model = to_onnx(policy, [("batch", obs_size)], input_names=[inp], output_names=[out],
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


def trace_ungated(art: Artifact, reason: str) -> Any:
    """The traced policy with its metadata but no gates run (`gates_skipped`, with `reason`): for
    measuring a file (latency), never for shipping it."""
    model = trace_policy(art)
    set_metadata(model, build_metadata(art, [], {"skipped": True, "reason": reason}))
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


def build_metadata(art: Artifact, golden: list[dict], gates: dict) -> dict[str, Any]:
    env = art.env
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
        # Element by element, and as the flat comma-separated keys C++ controllers read.
        "interface": (face := env.interface()),
        "observation_names": ",".join(e["name"] for e in face["observation"]),
        "action_names": ",".join(e["name"] for e in face["action"]),
        "action_scale": ",".join(repr(float(e["high"])) for e in face["action"]),
        # The robot's model for sim-to-sim runs in native MuJoCo (`crl-distill eval --sim mujoco`,
        # examples/robot_controller.py); absent where the env has none.
        **({"native": native} if (native := env.native_spec()) else {}),
    }
