"""`export(source)`: trace a teacher or student, run the gates, write the files.

    result = export("runs/pm/students", out="policy.onnx")   # load -> trace -> gates -> write

Loading is `crl_distill.artifacts`, tracing and metadata `export.trace`, the gates
`export.gates`, the C99 sources `export.c_export`; this module only puts them in order. On a
failed gate nothing is written at the target path, and export_report.json beside it names the
gate; every file is written atomically, and only after every gate passed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl_distill.artifacts import Artifact, load_artifact
from crl_distill.checkpoint import params_sha256
from crl_distill.dirlock import releases_locks
from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.evaluation import Policy, run_sequences
from crl_distill.export import c_export, exported
from crl_distill.export.gates import (
    gate_checker,
    gate_robust,
    ort_session,
    parity_observations,
    run_gates,
)
from crl_distill.export.trace import (
    DEFAULT_OPSET,
    IO_NAMES,
    POLICY_FORMAT,
    build_metadata,
    has_critic,
    recurrent_io,
    set_metadata,
    trace_critic,
    trace_policy,
)
from crl_distill.fileio import atomic_write_bytes, provenance
from crl_distill.perturb import parse_perturbation
from crl_distill.runtime import run_sequences as onnx_sequences
from crl_distill.runtime import weights_sha256
from crl_distill.teacher.acting import Acting
from crl_distill.teacher.run_dir import run_of

GOLDEN_PAIRS = 4
#: the length of a recurrent file's golden sequence
GOLDEN_STEPS = 8
FORMATS = ("onnx", "c")


@dataclass
class ExportResult:
    path: Path
    report_path: Path
    report: dict
    critic_path: Path | None = None
    #: policy.h and policy.c beside the ONNX file (`fmt="c"`)
    c_paths: list[Path] = field(default_factory=list)
    #: what was traced, for callers that measure it further (latency) without loading it again
    artifact: Artifact | None = None


@releases_locks
def export(source: str | Path | Artifact, out: str | Path | None = None,
           student: str | None = None, skip_gates: bool = False, episodes: int = 128,
           seed: int = 0, fmt: str = "onnx", cc: str | None = None, io_names: str = "crl",
           opset: int = DEFAULT_OPSET, act_samples: int = 1, robust: str | None = None,
           min_retention: float = 0.8) -> ExportResult:
    """Trace, check and write `out` (default: policy.onnx next to the source) atomically.

    `source`: anything `load_artifact` reads (a teacher acting as `act_samples` says) or an
    artifact already loaded. fmt="c" also writes a dependency-free C99 policy.h / policy.c
    beside it (students only), gated against the ONNX file (`export.c_export`). `robust`, a
    perturbation spec (`crl_distill.perturb`): the file is written only if, in native MuJoCo
    under it, its time at goal is >= `min_retention` x the clean teacher's (the teacher's
    figure from the student file, `episodes` episodes); spec and figures go into the metadata.
    """
    if episodes < 1:
        raise CrlDistillError("episodes must be >= 1")
    require_choice("format", fmt, FORMATS)
    require_choice("io names", io_names, tuple(IO_NAMES))
    if not 13 <= opset <= DEFAULT_OPSET:
        raise CrlDistillError(f"opset must be in [13, {DEFAULT_OPSET}], got {opset}")
    art = (source if isinstance(source, Artifact)
           else load_artifact(source, student, acting=Acting(act_samples)))
    if not art.in_jax:
        raise CrlDistillError(f"{art.source}: already an exported file; export its student or "
                              f"teacher instead")
    if fmt == "c":
        if art.kind != "student":
            raise CrlDistillError("C export is for students (plain MLPs); export the teacher as "
                                  "ONNX, or distill it first")
        c_export.find_cc(cc)  # fail before tracing when there is no compiler
    out = Path(out) if out is not None else exported.default_file(run_of(art.source), art.kind)
    if out.is_dir():
        raise CrlDistillError(f"{out} is a directory; give a file path for --out")
    if not 0 < min_retention <= 1:
        raise CrlDistillError(f"--min-retention must be in (0, 1], got {min_retention}")
    robust_spec = parse_perturbation(robust) if robust else None
    teacher_tag = _clean_teacher_time_at_goal(art) if robust_spec is not None else 0.0
    if robust_spec is not None and not art.env.native_spec():
        raise CrlDistillError(f"--robust is measured in native MuJoCo: {art.env.name} has no "
                              f"native model")
    exported.lock(out)

    t0 = time.perf_counter()
    # one traced function and one observation set serve the trace, the golden pairs and every
    # gate (ONNX and C), so that they all judge the same thing
    policy = art.policy(traceable=True)
    recurrent = recurrent_io(art, io_names)
    model = trace_policy(art, io_names, opset, policy)
    # File names, not paths: the report may travel with the file (see fileio.provenance).
    report: dict[str, Any] = {**provenance("source", art.source), "kind": art.kind,
                              "name": art.name, "env": art.env.name, "target": out.name,
                              "trace_s": time.perf_counter() - t0}
    obs = parity_observations(art.env, policy, seed)
    golden = golden_pairs(policy, obs)
    if skip_gates:
        gates: dict[str, Any] = {"skipped": True, "reason": "skipped by --skip-gates"}
    else:
        with _failure_reported(out, report):
            gates = run_gates(model, art, episodes, seed, policy, obs, recurrent)

    def serialized() -> tuple[dict[str, Any], bytes]:
        meta = build_metadata(art, golden, gates, io_names)
        set_metadata(model, {**meta, "io_names": io_names, "opset": opset,
                             "weights_sha256": weights_sha256(model)})
        return meta, model.SerializeToString()

    meta, data = serialized()
    if robust_spec is not None:
        # the gate runs the file as it will be written; then the spec it was tested under and
        # what it measured go into the file too
        with _failure_reported(out, report):
            gates["robust"] = gate_robust(data, out, robust_spec, min_retention, teacher_tag,
                                          episodes, seed)
        meta, data = serialized()
    files: dict[Path, bytes] = {out: data}  # written together, once everything passed
    critic_path = None
    if has_critic(art):
        critic = trace_critic(art)
        gate_checker(critic)
        set_metadata(critic, {**meta, "golden": [], "gates": {"checker": {"passed": True}},
                              "gates_skipped": False, "format": POLICY_FORMAT + "-critic"})
        critic_path = exported.critic_file(out)
        files[critic_path] = critic.SerializeToString()
    c_paths: list[Path] = []
    if fmt == "c":
        c_meta = {k: v for k, v in meta.items()
                  if k not in ("golden", "gates", "gates_skipped", "native")}
        prefix = c_export.c_prefix(out.stem)
        header, source_c = c_export.c_sources(meta["student"], art.params["policy"], c_meta, prefix)
        if skip_gates:
            report["c"] = {"skipped": True}
        elif recurrent is not None:
            with _failure_reported(out, report, gate="c"):
                want = onnx_sequences(ort_session(data), obs, recurrent)
                report["c"] = c_export.c_gates_recurrent(
                    header, source_c, obs.swapaxes(0, 1), want.swapaxes(0, 1), golden, cc, prefix)
        else:
            with _failure_reported(out, report, gate="c"):
                report["c"] = c_export.c_gates(
                    header, source_c, ort_session(data), obs[0], golden, cc, prefix)
        c_written = c_export.c_files(out.parent, header, source_c, prefix,
                                     meta["native"]["mjcf"] if "native" in meta else None)
        files.update(c_written)
        c_paths = list(c_written)
        report["c_files"] = [p.name for p in c_paths]
    for path, content in files.items():
        atomic_write_bytes(path, content)
    report.update({"passed": not skip_gates, "gates": gates, "bytes": len(data),
                   "critic": critic_path.name if critic_path else None,
                   "params_sha256": params_sha256(art.params),
                   "seconds": time.perf_counter() - t0})
    return ExportResult(path=out, report_path=exported.write_report(out, report), report=report,
                        critic_path=critic_path, c_paths=c_paths, artifact=art)


def golden_pairs(policy: Policy, obs: np.ndarray) -> list[dict]:
    """Pairs of the parity sequences `obs` [T, S, O] (real states first) and the traced
    `policy`'s actions on them: stored in the file, replayed by `crl-distill verify` on the
    robot computer. A stateless policy: the first `GOLDEN_PAIRS` one-step sequences; a
    recurrent one: the first `GOLDEN_STEPS` steps of the first sequence, from a zero state, to
    be replayed in order."""
    obs = obs[0, :GOLDEN_PAIRS, None] if obs.shape[0] == 1 else obs[:GOLDEN_STEPS, :1]
    act = np.asarray(jax.jit(lambda o: run_sequences(policy, o))(jnp.asarray(obs)))
    return [{"obs": o.tolist(), "action": a.tolist()}
            for o, a in zip(obs.reshape(-1, obs.shape[-1]), act.reshape(-1, act.shape[-1]),
                            strict=True)]


def _clean_teacher_time_at_goal(art: Artifact) -> float:
    """The clean teacher's time at goal recorded with the student at distillation."""
    summary = art.student.meta.get("summary", {}) if art.student is not None else {}
    teacher = summary.get("teacher_eval") or {}
    if "time_at_goal" not in teacher:
        raise CrlDistillError(f"{art.source}: --robust compares with the clean teacher's time at "
                              f"goal, which this {art.kind} file does not record (students "
                              f"distilled before it was recorded: distill again)")
    return float(teacher["time_at_goal"])


@contextlib.contextmanager
def _failure_reported(out: Path, report: dict[str, Any], gate: str | None = None) -> Iterator[None]:
    """A failed gate is recorded in export_report.json beside `out` (nothing else is written),
    then raised on."""
    try:
        yield
    except CrlDistillError as e:
        report.update({"passed": False, "failed_gate": getattr(e, "gate", gate), "error": str(e)})
        exported.write_report(out, report)
        raise


__all__ = ["FORMATS", "ExportResult", "export", "golden_pairs"]
