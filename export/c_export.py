"""Dependency-free C99 export of a student policy, and the gates that prove it.

    policy.h   sizes as #defines, the metadata as a comment block, `policy_act`
    policy.c   weights as static const float arrays, a fixed-size forward pass (no malloc)

MLP students (`cell` ""): `int policy_act(const float *obs, float *action)` maps the student's
input [POLICY_OBS_SIZE] (the same vector the ONNX file takes) to tanh(mean) [POLICY_ACTION_SIZE]
and returns 0, or -1 without writing `action` when an input is NaN or infinite. libm is used only
for what the network needs (tanhf always; expf for swish; sqrtf for LayerNorm).

Recurrent students (`cell` "gru" or "lstm"): the caller owns a `policy_state` (h, and c for an
LSTM), zeroes it with `void policy_reset(policy_state *s)` at every episode start, and steps with
`int policy_act(policy_state *s, const float *obs, float *action)` (0, or -1 leaving both action
and state untouched on NaN/inf). Scratch lives on the stack: no static mutable data, so separate
states may be stepped from separate threads. libm: expf, tanhf.

API: `c_sources(student_cfg, policy_params, metadata, prefix)` -> (header, source);
`c_files` (where each file goes); `c_prefix` (a C identifier from a file stem); `find_cc`,
`compile_c` (the gate's compiler and flags).

Gates: the files compile with `cc -std=c99 -O2 -Wall -Wextra -Werror`, and a compiled harness
reproduces the reference within 1e-5: `c_gates` (MLP) against the ONNX session on its golden
pairs and on >= 1000 observations; `c_gates_recurrent` against reference actions for whole
sequences, each stepped from a zero state (the golden pairs first, as one sequence).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from crl_distill.errors import CrlDistillError

C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
C_TOLERANCE = 1e-5
_ACTIVATIONS = {
    "relu": "x > 0.0f ? x : 0.0f",
    "swish": "x / (1.0f + expf(-x))",
    "tanh": "tanhf(x)",
}
# flax.linen GRUCell / LSTMCell parameter names, gate by gate in the order the C code stacks them
_CELLS = {"gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}


def _floats(a: np.ndarray) -> str:
    """Comma-separated float32 literals that round-trip exactly (9 significant digits)."""
    vals = [f"{float(v):.9g}" for v in np.asarray(a, np.float32).ravel()]
    lines = [", ".join(f"{v}f" if ("." in v or "e" in v) else f"{v}.0f" for v in vals[i:i + 8])
             for i in range(0, len(vals), 8)]
    return ",\n    ".join(lines)


def _layers(student_cfg: dict, net: dict) -> list[dict[str, Any]]:
    """The policy MLP as a list of Dense (+ LayerNorm) (+ activation) layers."""
    layers = []
    for i in range(int(student_cfg["depth"])):
        d = net[f"dense_{i}"]
        layers.append({"w": np.asarray(d["kernel"]), "b": np.asarray(d["bias"]),
                       "norm": net.get(f"norm_{i}"), "act": True})
    out = net["output"]
    layers.append({"w": np.asarray(out["kernel"]), "b": np.asarray(out["bias"]), "norm": None,
                   "act": False})
    return layers


def _meta_comment(metadata: dict) -> str:
    """The metadata as JSON lines for a C comment block (no "*/" can end it early)."""
    return json.dumps(metadata, indent=1, sort_keys=True, default=str).replace("*/", "* /")


def _episode_defines(up: str, metadata: dict) -> str:
    return (f"#define {up}_CONTROL_PERIOD {float(metadata.get('control_period', 0.0))!r}\n"
            f"#define {up}_SUCCESS_THRESHOLD {float(metadata.get('success_threshold', 0.0))!r}\n"
            f"#define {up}_EPISODE_LENGTH {int(metadata.get('episode_length', 0))}")


def _dense_c(name: str, w: np.ndarray, b: np.ndarray | None) -> list[str]:
    """`W{name}` (and `B{name}`) as static const arrays, and `dense{name}(x, y)`: y = x @ W + b."""
    n_in, n_out = w.shape
    # [in][out], as the kernel is stored: the inner loop runs over contiguous outputs with
    # no reduction, which compilers vectorise at -O2 without reassociating float sums.
    arrays = [f"static const float W{name}[{n_out * n_in}] = {{\n    {_floats(w)}\n}};"]
    if b is not None:
        arrays.append(f"static const float B{name}[{n_out}] = {{\n    {_floats(b)}\n}};")
    init = f"B{name}[o]" if b is not None else "0.0f"
    return [*arrays, f"""static void dense{name}(const float *restrict x, float *restrict y)
{{
    for (int o = 0; o < {n_out}; ++o)
        y[o] = {init};
    for (int i = 0; i < {n_in}; ++i) {{
        const float xi = x[i];
        const float *restrict w = W{name} + {n_out} * i;
        for (int o = 0; o < {n_out}; ++o)
            y[o] += w[o] * xi;
    }}
}}"""]


def c_sources(student_cfg: dict, policy_params: dict, metadata: dict,
              prefix: str = "policy") -> tuple[str, str]:
    """(header, source) for the student's deterministic policy. `policy_params` is the flax
    params of the student: {"params": {"net": ...}} for an MLP (`student_cfg["cell"]` "" or
    absent), {"params": {"cell": <GRUCell/LSTMCell params>, "output": ...}} for "gru"/"lstm"."""
    cell = student_cfg.get("cell") or ""
    if cell in _CELLS:
        return _recurrent_sources(cell, student_cfg, policy_params, metadata, prefix)
    if cell:
        raise CrlDistillError(f"C export: cell {cell!r} is not supported "
                              f"(\"\" for an MLP, {', '.join(map(repr, _CELLS))})")
    return _mlp_sources(student_cfg, policy_params, metadata, prefix)


def _mlp_sources(student_cfg: dict, policy_params: dict, metadata: dict,
                 prefix: str) -> tuple[str, str]:
    act = student_cfg.get("activation", "relu")
    if act not in _ACTIVATIONS:
        raise CrlDistillError(f"C export: activation {act!r} is not supported "
                              f"({', '.join(_ACTIVATIONS)})")
    layers = _layers(student_cfg, policy_params["params"]["net"])
    obs_size = layers[0]["w"].shape[0]
    action_size = layers[-1]["w"].shape[1] // 2
    width = max(w["w"].shape[1] for w in layers)
    up = prefix.upper()
    header = f"""/* {prefix}.h: a crl-distill student policy as dependency-free C99 (generated).
 *
 * int {prefix}_act(const float *obs, float *action);
 *   obs    [{up}_OBS_SIZE] the student's input, laid out as in the metadata below
 *   action [{up}_ACTION_SIZE] tanh(mean), each in [-1, 1]
 *   returns 0, or -1 (action untouched) when obs holds NaN or inf.
 *   Uses static scratch buffers: call it from one thread at a time.
 *
 * Metadata (JSON):
{_meta_comment(metadata)}
 */
#ifndef {up}_H
#define {up}_H

#define {up}_OBS_SIZE {obs_size}
#define {up}_ACTION_SIZE {action_size}
#define {up}_MAX_WIDTH {width}
{_episode_defines(up, metadata)}

int {prefix}_act(const float *obs, float *action);

#endif
"""
    need_norm = any(layer["norm"] is not None for layer in layers)
    arrays, calls = [], []
    for i, layer in enumerate(layers):
        n_out = layer["w"].shape[1]
        arrays += _dense_c(str(i), layer["w"], layer["b"])
        src, dst = ("obs" if i == 0 else ("buf_a" if i % 2 else "buf_b")), (
            "buf_a" if i % 2 == 0 else "buf_b")
        if i == len(layers) - 1:
            dst = "out"
        calls.append(f"    dense{i}({src}, {dst});")
        if layer["norm"] is not None:
            arrays.append(f"static const float S{i}[{n_out}] = {{\n    "
                          f"{_floats(layer['norm']['scale'])}\n}};")
            arrays.append(f"static const float N{i}[{n_out}] = {{\n    "
                          f"{_floats(layer['norm']['bias'])}\n}};")
            calls.append(f"    layer_norm({dst}, S{i}, N{i}, {n_out});")
        if layer["act"]:
            calls.append(f"    activate({dst}, {n_out});")
    helpers = [f"""static void activate(float *v, int n)
{{
    for (int i = 0; i < n; ++i) {{
        const float x = v[i];
        v[i] = {_ACTIVATIONS[act]};
    }}
}}"""]
    if need_norm:
        helpers.append("""static void layer_norm(float *v, const float *scale, const float *bias, int n)
{
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < n; ++i)
        mean += v[i];
    mean /= (float)n;
    for (int i = 0; i < n; ++i)
        var += (v[i] - mean) * (v[i] - mean);
    var /= (float)n;
    const float inv = 1.0f / sqrtf(var + 1e-6f);
    for (int i = 0; i < n; ++i)
        v[i] = (v[i] - mean) * inv * scale[i] + bias[i];
}""")
    used = [b for b in ("buf_a", "buf_b") if any(b in c for c in calls)]
    buffers = "static float " + ", ".join(f"{b}[{up}_MAX_WIDTH]" for b in used) + ";"
    source = f"""/* {prefix}.c: generated by crl-distill; see {prefix}.h. */
#include "{prefix}.h"

#include <math.h>

{chr(10).join(arrays)}

{chr(10).join(helpers)}

int {prefix}_act(const float *obs, float *action)
{{
    {buffers}
    float out[2 * {up}_ACTION_SIZE];
    for (int i = 0; i < {up}_OBS_SIZE; ++i)
        if (!isfinite(obs[i]))
            return -1;
{chr(10).join(calls)}
    for (int i = 0; i < {up}_ACTION_SIZE; ++i)
        action[i] = tanhf(out[i]);
    return 0;
}}
"""
    return header, source



def _stacked(cell_params: dict, side: str, gates: tuple[str, ...]) -> tuple[np.ndarray,
                                                                         np.ndarray | None]:
    """The gates' kernels side by side ([in][gates * H]) and their biases (zeros where a gate
    has none; None where none has one): `side` "i" for the input, "h" for the recurrent part."""
    dense = [cell_params[side + g] for g in gates]
    w = np.concatenate([np.asarray(d["kernel"], np.float32) for d in dense], axis=1)
    if not any("bias" in d for d in dense):
        return w, None
    n = w.shape[1] // len(gates)
    return w, np.concatenate([np.asarray(d["bias"], np.float32) if "bias" in d
                              else np.zeros(n, np.float32) for d in dense])


def _recurrent_sources(cell: str, student_cfg: dict, policy_params: dict, metadata: dict,
                       prefix: str) -> tuple[str, str]:
    gates = _CELLS[cell]
    try:
        p = policy_params["params"]
        wx, bx = _stacked(p["cell"], "i", gates)
        wh, bh = _stacked(p["cell"], "h", gates)
        w_out, b_out = np.asarray(p["output"]["kernel"]), np.asarray(p["output"]["bias"])
    except KeyError as e:
        raise CrlDistillError(f"C export: the {cell} student's params lack {e}") from None
    obs_size, hidden = wx.shape[0], wh.shape[0]
    action_size = w_out.shape[1] // 2
    if wh.shape[1] != len(gates) * hidden or w_out.shape[0] != hidden or int(
            student_cfg.get("width", hidden)) != hidden:
        raise CrlDistillError(f"C export: the {cell} student's params do not fit hidden size "
                              f"{student_cfg.get('width', hidden)} (recurrent kernel "
                              f"{tuple(wh.shape)}, output kernel {tuple(w_out.shape)})")
    up, lstm, n_gates = prefix.upper(), cell == "lstm", len(gates)
    state = f"h [{up}_HIDDEN_SIZE]" + (f" and c [{up}_HIDDEN_SIZE]" if lstm else "")
    c_field = f"\n    float c[{up}_HIDDEN_SIZE]; /* cell state */" if lstm else ""
    header = f"""/* {prefix}.h: a crl-distill recurrent ({cell}) student policy as dependency-free C99
 * (generated).
 *
 * {prefix}_state: the recurrent state, {state}; the caller owns it.
 * void {prefix}_reset({prefix}_state *s);
 *   zeroes *s. Call it at the start of every episode, before its first {prefix}_act.
 * int {prefix}_act({prefix}_state *s, const float *obs, float *action);
 *   one control step: advances *s and writes the action.
 *   obs    [{up}_OBS_SIZE] the student's input, laid out as in the metadata below
 *   action [{up}_ACTION_SIZE] tanh(mean), each in [-1, 1]
 *   returns 0, or -1 (action and *s untouched) when obs holds NaN or inf.
 *   No static mutable data (scratch is on the stack): separate states may be stepped from
 *   separate threads at once.
 *
 * Metadata (JSON):
{_meta_comment(metadata)}
 */
#ifndef {up}_H
#define {up}_H

#define {up}_OBS_SIZE {obs_size}
#define {up}_ACTION_SIZE {action_size}
#define {up}_HIDDEN_SIZE {hidden}
{_episode_defines(up, metadata)}
#define {up}_RECURRENT 1
#define {up}_CELL "{cell}"

typedef struct {{
    float h[{up}_HIDDEN_SIZE]; /* hidden state */{c_field}
}} {prefix}_state;

void {prefix}_reset({prefix}_state *s);
int {prefix}_act({prefix}_state *s, const float *obs, float *action);

#endif
"""
    # Gate pre-activations from the input (gx) and from h (gh), the gates stacked [g][H]; the
    # output layer keeps only the mean's columns (log_std is not needed to act).
    arrays = [*_dense_c("_x", wx, bx), *_dense_c("_h", wh, bh),
              *_dense_c("_o", w_out[:, :action_size], b_out[:action_size])]
    pre = [f"gx[{k * hidden} + j] + " for k in range(n_gates)]
    if lstm:
        step = f"""        const float gi = sigmoid({pre[0]}gh[{0 * hidden} + j]);
        const float gf = sigmoid({pre[1]}gh[{1 * hidden} + j]);
        const float gg = tanhf({pre[2]}gh[{2 * hidden} + j]);
        const float go = sigmoid({pre[3]}gh[{3 * hidden} + j]);
        s->c[j] = gf * s->c[j] + gi * gg;
        s->h[j] = go * tanhf(s->c[j]);"""
    else:
        step = f"""        const float r = sigmoid({pre[0]}gh[{0 * hidden} + j]);
        const float z = sigmoid({pre[1]}gh[{1 * hidden} + j]);
        const float n = tanhf({pre[2]}r * gh[{2 * hidden} + j]);
        s->h[j] = (1.0f - z) * n + z * s->h[j];"""
    zero_c = "\n        s->c[j] = 0.0f;" if lstm else ""
    source = f"""/* {prefix}.c: generated by crl-distill; see {prefix}.h. */
#include "{prefix}.h"

#include <math.h>

{chr(10).join(arrays)}

static float sigmoid(float x)
{{
    return 1.0f / (1.0f + expf(-x));
}}

void {prefix}_reset({prefix}_state *s)
{{
    for (int j = 0; j < {up}_HIDDEN_SIZE; ++j) {{
        s->h[j] = 0.0f;{zero_c}
    }}
}}

int {prefix}_act({prefix}_state *s, const float *obs, float *action)
{{
    float gx[{n_gates} * {up}_HIDDEN_SIZE], gh[{n_gates} * {up}_HIDDEN_SIZE], out[{up}_ACTION_SIZE];
    for (int i = 0; i < {up}_OBS_SIZE; ++i)
        if (!isfinite(obs[i]))
            return -1;
    dense_x(obs, gx);
    dense_h(s->h, gh);
    /* gh holds all of the old h's contribution, so h (and c) update in place. */
    for (int j = 0; j < {up}_HIDDEN_SIZE; ++j) {{
{step}
    }}
    dense_o(s->h, out);
    for (int i = 0; i < {up}_ACTION_SIZE; ++i)
        action[i] = tanhf(out[i]);
    return 0;
}}
"""
    return header, source

def _harness(doc: str = "", argc: int = 3, setup: str = "", step: str = "", state: str = "") -> str:
    """A test harness with PREFIX / UP placeholders: actions for a file of observations."""
    return f"""#include <stdio.h>
#include <stdlib.h>
#include "PREFIX.h"

/* argv[1]: float32 observations [n][UP_OBS_SIZE]; argv[2]: float32 actions written out.{doc} */
int main(int argc, char **argv)
{{
    if (argc != {argc})
        return 2;{setup}
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out)
        return 2;
    float obs[UP_OBS_SIZE], act[UP_ACTION_SIZE];
    while (fread(obs, sizeof(float), UP_OBS_SIZE, in) == UP_OBS_SIZE) {{{step}
        if (PREFIX_act({state}obs, act) != 0)
            for (int i = 0; i < UP_ACTION_SIZE; ++i)
                act[i] = 99.0f;
        fwrite(act, sizeof(float), UP_ACTION_SIZE, out);
    }}
    fclose(in);
    fclose(out);
    return 0;
}}
"""


HARNESS = _harness()
# Sequences back to back, the state reset at each one's start: the first is argv[4] steps long,
# the others argv[3].
RECURRENT_HARNESS = _harness(
    doc="\n * argv[3]: the sequence length; argv[4]: the first sequence's length.", argc=5,
    setup="""
    long len = atol(argv[3]), next_len = atol(argv[4]), left = 0;
    if (len <= 0 || next_len <= 0)
        return 2;
    PREFIX_state s;""",
    step="""
        if (left == 0) {
            PREFIX_reset(&s);
            left = next_len;
            next_len = len;
        }
        --left;""",
    state="&s, ")

def c_prefix(stem: str) -> str:
    """A C identifier from a file stem ("policy-2x64" -> "policy_2x64")."""
    name = re.sub(r"\W", "_", stem)
    return name if re.match(r"[A-Za-z_]", name) else f"p_{name}"


def find_cc(cc: str | None = None) -> str:
    path = shutil.which(cc or "cc")
    if path is None:
        raise CrlDistillError(f"C export needs a C compiler: {cc or 'cc'!r} was not found on PATH "
                              f"(install gcc or clang, or pass --cc)")
    return path


def compile_c(files: list[Path], out: Path, cc: str | None = None) -> str:
    """Compile with the gate's flags (+ -lm); returns the compiler's warnings (none pass)."""
    cmd = [find_cc(cc), *C_FLAGS, *map(str, files), "-o", str(out), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CrlDistillError(f"C export failed to compile: {(r.stderr or r.stdout).strip()[:300]}")
    return r.stderr


def _run_harness(header: str, source: str, harness: str, prefix: str, obs: np.ndarray,
                 args: list[str], cc: str | None) -> tuple[np.ndarray, str]:
    """Compile the pair with `harness`, run it on `obs` [n][obs] (+ `args`); returns its actions
    [n][action] (99 where `act` refused) and the compiler's warnings."""
    with tempfile.TemporaryDirectory(prefix="crl-c-") as tmp:
        d = Path(tmp)
        (d / f"{prefix}.h").write_text(header)
        (d / f"{prefix}.c").write_text(source)
        (d / "harness.c").write_text(harness.replace("PREFIX", prefix).replace("UP", prefix.upper()))
        warnings = compile_c([d / f"{prefix}.c", d / "harness.c"], d / "harness", cc)
        obs.astype(np.float32).tofile(d / "obs.bin")
        r = subprocess.run([str(d / "harness"), str(d / "obs.bin"), str(d / "act.bin"), *args],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise CrlDistillError(f"C export: the test harness failed (exit {r.returncode})")
        return np.fromfile(d / "act.bin", np.float32).reshape(len(obs), -1), warnings


def _gate_result(got: np.ndarray, want: np.ndarray, n_golden: int, warnings: str) -> dict:
    """Compare the harness's actions with the reference (the first `n_golden` rows golden)."""
    if got.shape != want.shape:
        raise CrlDistillError(f"C export gate failed: C gives actions of shape {got.shape}, the "
                              f"reference {want.shape}")
    diff = float(np.abs(got - want).max())
    golden_diff = float(np.abs(got[:n_golden] - want[:n_golden]).max()) if n_golden else 0.0
    result = {"passed": diff <= C_TOLERANCE, "observations": int(len(got)), "golden": n_golden,
              "max_abs_diff": diff, "golden_max_abs_diff": golden_diff, "tolerance": C_TOLERANCE,
              "flags": " ".join(C_FLAGS), "warnings": warnings.count("warning:")}
    if not result["passed"]:
        raise CrlDistillError(f"C export gate failed: C differs from the ONNX file by {diff:.3g} "
                              f"> {C_TOLERANCE:g}")
    return result


def c_gates(header: str, source: str, onnx_session: Any, observations: np.ndarray,
            golden: list[dict], cc: str | None = None, prefix: str = "policy") -> dict:
    """Compile the export and a harness; compare with onnxruntime on golden pairs + observations."""
    obs = np.concatenate([np.asarray([g["obs"] for g in golden], np.float32).reshape(
        -1, observations.shape[1]), observations.astype(np.float32)])
    got, warnings = _run_harness(header, source, HARNESS, prefix, obs, [], cc)
    want = np.concatenate([onnx_session.run(None, {"obs": obs[i:i + 1024]})[0]
                           for i in range(0, len(obs), 1024)])
    return _gate_result(got, want, len(obs) - len(observations), warnings)


def c_gates_recurrent(header: str, source: str, sequences: np.ndarray, want: np.ndarray,
                      golden: list[dict], cc: str | None = None, prefix: str = "policy") -> dict:
    """Compile a recurrent export and a harness; step it through `golden` (one sequence of
    {"obs", "action"} pairs) and then each of `sequences` [S, T, obs], every sequence from a zero
    state, and compare its actions with `golden`'s and `want` [S, T, action] (the reference,
    e.g. from onnxruntime). Adds "sequences" and "sequence_length" to `c_gates`'s keys."""
    seqs, ref = np.asarray(sequences, np.float32), np.asarray(want, np.float32)
    if seqs.ndim != 3 or ref.ndim != 3 or ref.shape[:2] != seqs.shape[:2] or seqs.shape[1] < 1:
        raise CrlDistillError(f"C export gate: sequences {seqs.shape} and reference actions "
                              f"{ref.shape} must be [S, T >= 1, obs] and [S, T, action]")
    n_seq, length, obs_size = seqs.shape
    obs = np.concatenate([np.asarray([g["obs"] for g in golden], np.float32).reshape(
        -1, obs_size), seqs.reshape(-1, obs_size)])
    expected = np.concatenate([np.asarray([g["action"] for g in golden], np.float32).reshape(
        -1, ref.shape[2]), ref.reshape(-1, ref.shape[2])])
    if not len(obs):
        raise CrlDistillError("C export gate: no sequences and no golden pairs to check")
    got, warnings = _run_harness(header, source, RECURRENT_HARNESS, prefix, obs,
                                 [str(length), str(len(golden) or length)], cc)
    return {**_gate_result(got, expected, len(golden), warnings), "sequences": n_seq,
            "sequence_length": length}

def c_files(out_dir: Path, header: str, source: str, prefix: str = "policy",
            model_xml: str | None = None) -> dict[Path, bytes]:
    """The pair (and the robot's MJCF, where the env has one) by the path each goes to."""
    files = {f"{prefix}.h": header, f"{prefix}.c": source}
    if model_xml is not None:
        files[f"{prefix}.xml"] = model_xml
    return {Path(out_dir) / name: text.encode() for name, text in files.items()}


__all__ = ["C_FLAGS", "C_TOLERANCE", "c_gates", "c_gates_recurrent", "c_prefix", "c_sources", "c_files",
           "compile_c", "find_cc"]
