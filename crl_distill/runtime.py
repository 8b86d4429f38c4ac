"""Run an exported crl-distill policy with numpy + onnxruntime only (no JAX).

    from crl_distill.runtime import OnnxPolicy
    policy = OnnxPolicy("policy.onnx")            # one intra-op thread, CPU unless asked
    action = policy.act(state=s, goal=g)          # or policy.act(obs), batch or single
    policy.reset()                                # at an episode's start (history, memory)

A recurrent student's file (metadata `recurrent`) takes its hidden state as explicit inputs
and returns the next one (`h_in` [, `c_in`] -> `h_out` [, `c_out`]); `OnnxPolicy` carries it
per batch row between calls (`RecurrentState`) and `reset()` zeroes it.

Every bad input raises `PolicyInputError` (a `PolicyError`) with a one-line message; an
action is always finite and inside the action bounds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crl_distill.errors import CrlDistillError
from crl_distill.obs_spec import ObsSpec, ObsStacker

METADATA_PREFIX = "crl_distill."


#: how far a replayed golden pair may differ from the action stored at export
VERIFY_TOLERANCE = 1e-5

REQUIRED_METADATA = ("observation_size", "state_size", "action_size", "action_bounds", "env",
                     "control_period", "params_sha256")


class PolicyError(CrlDistillError):
    """The policy cannot produce a safe action; the base of every runtime error."""


class PolicyInputError(PolicyError, ValueError):
    """An observation the policy cannot act on (shape, dtype, non-finite values)."""


def _import_ort():
    import onnxruntime as ort

    # Provider probing (e.g. a GPU build on a machine without CUDA) logs warnings at level 2.
    ort.set_default_logger_severity(3)
    return ort


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The crl-distill metadata of an ONNX file, JSON values decoded (no session is built)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise CrlDistillError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    try:
        props = {p.key: p.value for p in model.metadata_props}
    except UnicodeDecodeError:
        raise CrlDistillError(f"{path}: damaged metadata (not UTF-8 text)") from None
    return _decode(props, path)


def weights_sha256(model: Any) -> str:
    """SHA-256 over every weight tensor of an onnx.ModelProto (initializers and Constant nodes,
    subgraphs included, names with them), independent of the metadata."""
    import onnx
    from onnx import numpy_helper

    h = hashlib.sha256()

    def tensor(t: Any) -> None:
        h.update(t.name.encode())
        h.update(np.ascontiguousarray(numpy_helper.to_array(t)).tobytes())

    def graph(g: Any) -> None:
        for t in g.initializer:
            tensor(t)
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    tensor(attr.t)
                elif attr.type == onnx.AttributeProto.GRAPH:
                    graph(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        graph(sub)

    graph(model.graph)
    return h.hexdigest()


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Check an exported file on this machine: metadata, golden pairs on this onnxruntime, and
    the weights against the hash recorded at export (when the `onnx` package is present).
    Returns a summary; raises CrlDistillError naming the problem."""
    policy = OnnxPolicy(path, self_test=False)
    out = {"path": str(path), **policy.self_test()}
    want = policy.metadata.get("weights_sha256")
    try:
        import onnx
    except ImportError:
        out["weights"] = "not checked (no onnx package)"
        return out
    if not want:
        out["weights"] = "not recorded in this file"
        return out
    got = weights_sha256(onnx.load(str(path)))
    if got != want:
        raise PolicyError(f"{path}: weights differ from those recorded at export (sha256 "
                          f"{got[:12]}... != {want[:12]}...)")
    out["weights"] = "match"
    return out


def _decode(props: dict[str, str], path: Any) -> dict[str, Any]:
    """The crl_distill.* entries, JSON-decoded. Export writes every one of them as JSON, so
    one that does not decode was altered after export."""
    out = {}
    for k, v in props.items():
        if k.startswith(METADATA_PREFIX):
            try:
                out[k[len(METADATA_PREFIX):]] = json.loads(v)
            except ValueError:  # not JSON, or (protobuf handing back raw bytes) not UTF-8
                raise CrlDistillError(f"{path}: damaged metadata (entry {k!r} is not JSON)") from None
    return out


class RecurrentState:
    """The hidden state a recurrent exported file carries between calls, one per batch row.

    `spec` is the file's `recurrent` metadata: `state_inputs` / `state_outputs` (names, in
    order), `state_shape` (["batch", H], or [1, "batch", H] in rsl_rl's layout). The state is
    zero at an episode's first step: before the first call, after `reset()`, for the rows
    `reset(rows)` names, and whenever the batch size changes.
    """

    def __init__(self, spec: dict[str, Any]):
        try:
            self.inputs = [str(n) for n in spec["state_inputs"]]
            self.outputs = [str(n) for n in spec["state_outputs"]]
            shape = list(spec["state_shape"])
            self.hidden_size = int(shape[-1])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CrlDistillError(f"malformed recurrent metadata ({type(e).__name__}: {e})") from None
        if len(self.inputs) != len(self.outputs) or not self.inputs or shape[-2] != "batch" or (
                len(shape) == 3 and shape[0] != 1) or len(shape) not in (2, 3):
            raise CrlDistillError(f"malformed recurrent metadata (state {self.inputs} -> "
                                  f"{self.outputs}, shape {shape})")
        #: rsl_rl's layout puts a layer axis of 1 first: [1, batch, H]
        self.layer_axis = len(shape) == 3
        self._state: list[np.ndarray] | None = None

    def zeros(self, batch: int) -> list[np.ndarray]:
        lead = (1, batch) if self.layer_axis else (batch,)
        return [np.zeros((*lead, self.hidden_size), np.float32) for _ in self.inputs]

    def reset(self, rows: Any = None) -> None:
        if rows is None or self._state is None:
            self._state = None
        else:
            for s in self._state:
                s[..., np.asarray(rows), :] = 0.0

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        """The state inputs for a call on `batch` rows."""
        if self._state is None or self._state[0].shape[-2] != batch:
            self._state = self.zeros(batch)
        return dict(zip(self.inputs, self._state, strict=True))

    def update(self, outputs: list[np.ndarray]) -> None:
        """Keep the state outputs of the call (in `state_outputs` order) for the next one."""
        # fresh arrays from the session each call: kept as they are (reset edits them in place)
        self._state = [o if o.dtype == np.float32 else o.astype(np.float32) for o in outputs]


class SessionStepper:
    """A session (onnxruntime's, or anything with its `run(names, feeds)`) as a host policy
    obs [B, O] -> action [B, A] that carries a recurrent file's state between calls
    (`spec`: its `recurrent` metadata; None for a stateless file). `reset` as RecurrentState's."""

    def __init__(self, session: Any, spec: dict[str, Any] | None, outputs: list[str] | None = None):
        self.session = session
        self.state = RecurrentState(spec) if spec is not None else None
        #: None: every output, in the graph's order (action first, then the state)
        self.outputs = outputs

    def reset(self, rows: Any = None) -> None:
        if self.state is not None:
            self.state.reset(rows)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(obs, np.float32)
        if self.state is None:
            return self.session.run(self.outputs, {"obs": x})[0]
        out = self.session.run(self.outputs, {"obs": x, **self.state.feeds(len(x))})
        self.state.update(out[1:])
        return out[0]


def run_sequences(session: Any, obs: np.ndarray, spec: dict[str, Any] | None,
                  batch: int | None = None) -> np.ndarray:
    """A file's actions on time-major sequences obs [T, S, O], each from an episode's first
    step (zero state), `batch` sequences per call (default: all S) -> [T, S, A]."""
    batch = batch or obs.shape[1]
    chunks = []
    for lo in range(0, obs.shape[1], batch):
        step = SessionStepper(session, spec)
        chunks.append(np.stack([step(o[lo:lo + batch]) for o in obs]))
    return np.concatenate(chunks, axis=1)


class OnnxPolicy:
    """A deterministic policy from an exported ONNX file.

    device: "cpu" (default), "cuda" (used only if onnxruntime has CUDA and a session starts;
    otherwise CPU, quietly), or "auto" (same as "cuda"). `fallback_reason` says why CUDA was
    not used when it was asked for.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", intra_op_threads: int = 1,
                 self_test: bool = False, clamp_to_range: bool = False):
        ort = _import_ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise CrlDistillError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.fallback_reason: str | None = None
        providers = ["CPUExecutionProvider"]
        if device in ("cuda", "auto"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                self.fallback_reason = "onnxruntime has no CUDA provider here"
        elif device != "cpu":
            raise CrlDistillError(f"device must be cpu, cuda or auto, got {device!r}")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers)
        except Exception as e:
            if providers[0] == "CUDAExecutionProvider":
                self.fallback_reason = f"CUDA session failed ({type(e).__name__})"
                self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
            else:
                raise CrlDistillError(f"{self.path}: onnxruntime cannot load it "
                                      f"({str(e).splitlines()[0][:200]})") from None
        if "CUDAExecutionProvider" not in self.session.get_providers() and device != "cpu":
            self.fallback_reason = self.fallback_reason or "CUDA provider not active"
        try:
            props = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:  # protobuf does not check proto2 strings; Python does
            raise CrlDistillError(f"{self.path}: damaged metadata (not UTF-8 text)") from None
        self.metadata = _decode(props, self.path)
        if self.metadata.get("format") != "crl-distill-policy":
            raise CrlDistillError(f"{self.path}: not a crl-distill policy (no crl_distill.* "
                                  f"policy metadata)")
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise CrlDistillError(f"{self.path}: incomplete crl-distill metadata (missing "
                                  f"{', '.join(missing)}; is the file damaged?)")
        #: the file's hidden-state layout (a recurrent student), None for a stateless policy
        self.recurrent: dict[str, Any] | None = self.metadata.get("recurrent")
        try:
            self._stepper = SessionStepper(self.session, self.recurrent)
        except CrlDistillError as e:
            raise CrlDistillError(f"{self.path}: {e}") from None
        self._state = self._stepper.state
        want = ["obs", *(self._state.inputs if self._state else [])]
        if [i.name for i in self.session.get_inputs()] != want:
            raise CrlDistillError(f"{self.path}: expected the inputs {want}")
        try:  # sizes and bounds of the wrong type: altered metadata
            #: the graph's input: concat(state, goal), or a student's stacked input
            self.input_size = int(self.metadata["observation_size"])
            # The file's "state_size" is the state part of the graph's input: for a student
            # with a spec, its kept elements now and at each past step it stacks.
            input_state_size = int(self.metadata["state_size"])
            self.goal_size = self.input_size - input_state_size
            self.obs_spec, self._stacker = self._read_obs_spec()
            #: the env's state size this policy was made for: the state part of the env's full
            #: observation (`from_env_obs`, `act_env`); the teacher's state for a student
            self.env_state_size = (input_state_size if self.obs_spec is None else
                                   int(self.metadata["observation_spec"]["teacher_state_size"]))
            kept_size = (input_state_size if self.obs_spec is None else
                         self.obs_spec.kept_size(self.env_state_size))
            #: the state part of what `act` takes: one step's state elements, those the policy
            #: reads (a student's kept elements; the runtime stacks past ones itself), so
            #: env_state_size where the file has no observation spec
            self.state_size = kept_size
            #: what `act` takes: state_size + goal_size
            self.observation_size = self.state_size + self.goal_size
            self.action_size = int(self.metadata["action_size"])
            lo, hi = self.metadata.get("action_bounds", [-1.0, 1.0])
            self.action_low, self.action_high = float(lo), float(hi)
            self.env = self.metadata.get("env")
            self.control_period = float(self.metadata.get("control_period", 0.0))
        except (TypeError, ValueError) as e:
            raise CrlDistillError(f"{self.path}: damaged metadata ({type(e).__name__}: "
                                  f"{str(e)[:100]})") from None
        self._out_name = self.session.get_outputs()[0].name
        self._out_names = [self._out_name, *(self._state.outputs if self._state else [])]
        if [o.name for o in self.session.get_outputs()] != self._out_names and self._state:
            raise CrlDistillError(f"{self.path}: expected the outputs {self._out_names}")
        self._stepper.outputs = self._out_names
        cpu = self.session.get_providers()[0] == "CPUExecutionProvider"
        self._bound = self._bind_single() if cpu and self._state is None else None
        self._range = self._read_range()
        self.clamp_to_range = clamp_to_range and self._range is not None
        #: observations acted on so far with an element outside the range seen in training,
        #: and the count per input element (None where the file records no range)
        self.out_of_range = 0
        self.out_of_range_per_element = (np.zeros(self.input_size, np.int64)
                                         if self._range is not None else None)
        if self_test:
            self.self_test()

    def self_test(self) -> dict[str, Any]:
        """Replay the golden pairs stored at export on this machine's onnxruntime (a recurrent
        file's: one sequence from a zero state, in order); raises PolicyError when an action
        differs by more than VERIFY_TOLERANCE."""
        golden = self.metadata.get("golden")
        if not isinstance(golden, list) or not golden:
            raise PolicyError(f"{self.path}: no golden pairs in the metadata to self-test with")
        try:
            obs = np.asarray([g["obs"] for g in golden], np.float32)
            want = np.asarray([g["action"] for g in golden], np.float32)
        except (KeyError, TypeError, ValueError):
            raise PolicyError(f"{self.path}: malformed golden pairs in the metadata") from None
        if obs.shape != (len(golden), self.input_size) or want.shape != (len(golden), self.action_size):
            raise PolicyError(f"{self.path}: golden pairs do not fit the graph's sizes")
        got = run_sequences(self.session, obs[:, None], self.recurrent)[:, 0]
        diff = float(np.abs(got - want).max())
        if not diff <= VERIFY_TOLERANCE:
            raise PolicyError(f"{self.path}: self-test failed: golden actions differ by {diff:.3g} "
                              f"> {VERIFY_TOLERANCE:g} (altered weights, or a runtime that "
                              f"computes differently)")
        return {"golden": len(golden), "max_abs_diff": diff,
                **({"golden_sequence": True} if self.recurrent is not None else {})}

    def _read_obs_spec(self) -> tuple[ObsSpec | None, ObsStacker | None]:
        raw = self.metadata.get("observation_spec")
        if raw is None:
            return None, None
        try:
            spec = ObsSpec(raw["state_indices"], int(raw["history"]))
            teacher_state_size = int(raw["teacher_state_size"])
            spec.check(teacher_state_size)
        except (KeyError, TypeError, ValueError, CrlDistillError) as e:
            raise CrlDistillError(f"{self.path}: malformed observation_spec metadata ({e})") from None
        if spec.input_size(teacher_state_size, self.goal_size) != self.input_size:
            raise CrlDistillError(f"{self.path}: observation_spec does not match the graph's "
                                  f"input size {self.input_size}")
        # The stacker works on [kept state, goal] rows (what `act` takes), so its own spec keeps
        # all kept_size elements of each row.
        return spec, ObsStacker(ObsSpec(None, spec.history), spec.kept_size(teacher_state_size))

    def _bind_single(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """Preallocated input/output buffers bound to the session for batch-1 calls: a robot's
        control loop then pays no per-call allocation (about 4 us less per action here)."""
        inp = np.zeros((1, self.input_size), np.float32)
        out = np.zeros((1, self.action_size), np.float32)
        io = self.session.io_binding()
        io.bind_input("obs", "cpu", 0, np.float32, list(inp.shape), inp.ctypes.data)
        io.bind_output(self._out_name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        return io, inp, out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._bound is not None and batch.shape[0] == 1:
            io, inp, out = self._bound
            inp[...] = batch
            self.session.run_with_iobinding(io)
            return out.copy()
        return self._stepper(batch)

    def _read_range(self) -> tuple[np.ndarray, np.ndarray] | None:
        raw = self.metadata.get("obs_range")
        if raw is None:
            return None
        try:
            low, high = (np.asarray(raw[k], np.float32) for k in ("low", "high"))
        except (KeyError, TypeError, ValueError):
            raise CrlDistillError(f"{self.path}: malformed obs_range metadata") from None
        if low.shape != (self.input_size,) or high.shape != (self.input_size,):
            raise CrlDistillError(f"{self.path}: obs_range does not match the input size "
                                  f"{self.input_size}")
        return low, high

    def _monitor(self, batch: np.ndarray) -> np.ndarray:
        """Count (and with clamp_to_range, clip) inputs outside the range seen in training."""
        if self._range is None:
            return batch
        low, high = self._range
        outside = (batch < low) | (batch > high)
        self.out_of_range += int(outside.any(1).sum())
        self.out_of_range_per_element += outside.sum(0)
        return np.clip(batch, low, high) if self.clamp_to_range else batch

    def reset(self, rows: Any = None) -> None:
        """Start new episodes (all rows, or those in `rows`): forget the observation history
        of a student that stacks past observations and zero a recurrent student's state; a
        no-op for every other policy."""
        if self._stacker is not None:
            self._stacker.reset(rows)
        self._stepper.reset(rows)

    def from_env_obs(self, obs: Any) -> np.ndarray:
        """The env's full observation [.., env_state_size + goal] -> what `act` takes (the
        student's kept state elements + goal); identity for a policy without a spec."""
        x = self._check(obs, self.env_state_size + self.goal_size, "env obs")
        if self.obs_spec is None:
            return x
        s = self.env_state_size
        return np.concatenate([self.obs_spec.select(x[..., :s]), x[..., s:]], axis=-1)

    def act_env(self, obs: Any) -> np.ndarray:
        """`act` on the env's full observation (simulators); call `reset()` at episode starts."""
        return self.act(self.from_env_obs(obs))

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _check(self, x: Any, size: int, what: str) -> np.ndarray:
        if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim in (1, 2) and (
                x.shape[-1] == size and x.size):
            # The common case on a robot, at a few us per call: a float64 sum (which no float32
            # values overflow) is NaN or inf exactly when an element is; for a few dozen values
            # Python's sum is faster than any numpy call.
            total = sum(x.ravel().tolist()) if x.size <= 256 else np.add.reduce(
                x, axis=None, dtype=np.float64)
            if not math.isfinite(total):
                raise PolicyInputError(f"{what} contains NaN or inf")
            return x
        try:
            a = np.asarray(x)
        except Exception:
            raise PolicyInputError(f"{what} is not array-like") from None
        if a.dtype.kind not in "fiu":
            raise PolicyInputError(f"{what} has dtype {a.dtype}, expected a real number type "
                                   f"(float32 preferred)")
        if a.ndim not in (1, 2) or a.shape[-1] != size or (a.ndim == 2 and a.shape[0] == 0):
            raise PolicyInputError(f"{what} has shape {list(a.shape)}, expected [{size}] or "
                                   f"[batch, {size}]")
        if not np.isfinite(a).all():
            raise PolicyInputError(f"{what} contains NaN or inf")
        with np.errstate(over="ignore"):
            a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise PolicyInputError(f"{what} has values outside the float32 range")
        return a

    def act(self, obs: Any = None, *, state: Any = None, goal: Any = None) -> np.ndarray:
        """obs [obs_size] or [B, obs_size] (or state + goal) -> action [A] or [B, A], float32.

        For a student with an observation spec, obs is its own current observation (the kept
        state elements + goal); a student that stacks past observations keeps them here, and a
        recurrent student its hidden state, per batch row, until `reset()`."""
        if obs is None:
            if state is None or goal is None:
                raise PolicyInputError("give obs, or both state and goal")
            s = self._check(state, self.state_size, "state")
            g = self._check(goal, self.goal_size, "goal")
            if s.ndim != g.ndim or (s.ndim == 2 and s.shape[0] != g.shape[0]):
                raise PolicyInputError(f"state {list(s.shape)} and goal {list(g.shape)} do not "
                                       f"share a batch size")
            x = np.concatenate([s, g], axis=-1)
        else:
            if state is not None or goal is not None:
                raise PolicyInputError("give obs or state + goal, not both")
            x = self._check(obs, self.observation_size, "obs")
        single = x.ndim == 1
        batch = x.reshape(1, -1) if single else np.ascontiguousarray(x)
        if self._stacker is not None:
            batch = self._stacker(batch)
        batch = self._monitor(batch)
        action = self._run(batch)
        lo, hi = self.action_low, self.action_high
        if action.size <= 64 and all(lo <= v <= hi for v in action.ravel().tolist()):
            return action[0] if single else action  # the usual case, checked in pure Python
        if not math.isfinite(np.add.reduce(action, axis=None, dtype=np.float64)):
            # A finite input gave a non-finite action: the file is damaged; never actuate it.
            raise PolicyError("policy produced a non-finite action for a finite input")
        np.clip(action, lo, hi, out=action)
        return action[0] if single else action

    __call__ = act
