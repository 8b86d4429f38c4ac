"""Dependency-free C99 export of a student policy, and the gates that prove it.

    policy.h   sizes as #defines, the metadata as a comment block, `policy_act`
    policy.c   weights as static const float arrays, a fixed-size forward pass (no malloc)

`int policy_act(const float *obs, float *action)` maps the student's input [POLICY_OBS_SIZE]
(the same vector the ONNX file takes) to tanh(mean) [POLICY_ACTION_SIZE] and returns 0, or -1
without writing `action` when an input is NaN or infinite. libm is used only for what the
network needs (tanhf always; expf for swish; sqrtf for LayerNorm).

Gates (`c_gates`): the files compile with `cc -std=c99 -O2 -Wall -Wextra -Werror`, and a
compiled harness reproduces the ONNX file within 1e-5 on its golden pairs and on >= 1000
observations.
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


def c_sources(student_cfg: dict, policy_params: dict, metadata: dict,
              prefix: str = "policy") -> tuple[str, str]:
    """(header, source) for the student's deterministic policy; `policy_params` is the flax
    params of `StudentPolicy` ({"params": {"net": ...}})."""
    act = student_cfg.get("activation", "relu")
    if act not in _ACTIVATIONS:
        raise CrlDistillError(f"C export: activation {act!r} is not supported "
                              f"({', '.join(_ACTIVATIONS)})")
    layers = _layers(student_cfg, policy_params["params"]["net"])
    obs_size = layers[0]["w"].shape[0]
    action_size = layers[-1]["w"].shape[1] // 2
    width = max(w["w"].shape[1] for w in layers)
    up = prefix.upper()
    meta_lines = json.dumps(metadata, indent=1, sort_keys=True, default=str).replace("*/", "* /")
    header = f"""/* {prefix}.h: a crl-distill student policy as dependency-free C99 (generated).
 *
 * int {prefix}_act(const float *obs, float *action);
 *   obs    [{up}_OBS_SIZE] the student's input, laid out as in the metadata below
 *   action [{up}_ACTION_SIZE] tanh(mean), each in [-1, 1]
 *   returns 0, or -1 (action untouched) when obs holds NaN or inf.
 *   Uses static scratch buffers: call it from one thread at a time.
 *
 * Metadata (JSON):
{meta_lines}
 */
#ifndef {up}_H
#define {up}_H

#define {up}_OBS_SIZE {obs_size}
#define {up}_ACTION_SIZE {action_size}
#define {up}_MAX_WIDTH {width}
#define {up}_CONTROL_PERIOD {float(metadata.get("control_period", 0.0))!r}
#define {up}_SUCCESS_THRESHOLD {float(metadata.get("success_threshold", 0.0))!r}
#define {up}_EPISODE_LENGTH {int(metadata.get("episode_length", 0))}

int {prefix}_act(const float *obs, float *action);

#endif
"""
    need_norm = any(layer["norm"] is not None for layer in layers)
    arrays, calls = [], []
    for i, layer in enumerate(layers):
        n_in, n_out = layer["w"].shape
        # [in][out], as the kernel is stored: the inner loop runs over contiguous outputs with
        # no reduction, which compilers vectorise at -O2 without reassociating float sums.
        arrays.append(f"static const float W{i}[{n_out * n_in}] = {{\n    "
                      f"{_floats(layer['w'])}\n}};")
        arrays.append(f"static const float B{i}[{n_out}] = {{\n    {_floats(layer['b'])}\n}};")
        src, dst = ("obs" if i == 0 else ("buf_a" if i % 2 else "buf_b")), (
            "buf_a" if i % 2 == 0 else "buf_b")
        if i == len(layers) - 1:
            dst = "out"
        arrays.append(f"""static void dense{i}(const float *restrict x, float *restrict y)
{{
    for (int o = 0; o < {n_out}; ++o)
        y[o] = B{i}[o];
    for (int i = 0; i < {n_in}; ++i) {{
        const float xi = x[i];
        const float *restrict w = W{i} + {n_out} * i;
        for (int o = 0; o < {n_out}; ++o)
            y[o] += w[o] * xi;
    }}
}}""")
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


HARNESS = """#include <stdio.h>
#include <stdlib.h>
#include "PREFIX.h"

/* argv[1]: float32 observations [n][UP_OBS_SIZE]; argv[2]: float32 actions written out. */
int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out)
        return 2;
    float obs[UP_OBS_SIZE], act[UP_ACTION_SIZE];
    while (fread(obs, sizeof(float), UP_OBS_SIZE, in) == UP_OBS_SIZE) {
        if (PREFIX_act(obs, act) != 0)
            for (int i = 0; i < UP_ACTION_SIZE; ++i)
                act[i] = 99.0f;
        fwrite(act, sizeof(float), UP_ACTION_SIZE, out);
    }
    fclose(in);
    fclose(out);
    return 0;
}
"""


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


def c_gates(header: str, source: str, onnx_session: Any, observations: np.ndarray,
            golden: list[dict], cc: str | None = None, prefix: str = "policy") -> dict:
    """Compile the export and a harness; compare with onnxruntime on golden pairs + observations."""
    obs = np.concatenate([np.asarray([g["obs"] for g in golden], np.float32).reshape(
        -1, observations.shape[1]), observations.astype(np.float32)])
    with tempfile.TemporaryDirectory(prefix="crl-c-") as tmp:
        d = Path(tmp)
        (d / f"{prefix}.h").write_text(header)
        (d / f"{prefix}.c").write_text(source)
        (d / "harness.c").write_text(HARNESS.replace("PREFIX", prefix).replace("UP", prefix.upper()))
        warnings = compile_c([d / f"{prefix}.c", d / "harness.c"], d / "harness", cc)
        obs.tofile(d / "obs.bin")
        r = subprocess.run([str(d / "harness"), str(d / "obs.bin"), str(d / "act.bin")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise CrlDistillError(f"C export: the test harness failed (exit {r.returncode})")
        got = np.fromfile(d / "act.bin", np.float32).reshape(len(obs), -1)
    want = np.concatenate([onnx_session.run(None, {"obs": obs[i:i + 1024]})[0]
                           for i in range(0, len(obs), 1024)])
    diff = float(np.abs(got - want).max())
    n_golden = len(obs) - len(observations)
    golden_diff = float(np.abs(got[:n_golden] - want[:n_golden]).max()) if n_golden else 0.0
    result = {"passed": diff <= C_TOLERANCE, "observations": int(len(obs)), "golden": n_golden,
              "max_abs_diff": diff, "golden_max_abs_diff": golden_diff, "tolerance": C_TOLERANCE,
              "flags": " ".join(C_FLAGS), "warnings": warnings.count("warning:")}
    if not result["passed"]:
        raise CrlDistillError(f"C export gate failed: C differs from the ONNX file by {diff:.3g} "
                              f"> {C_TOLERANCE:g}")
    return result


def c_files(out_dir: Path, header: str, source: str, prefix: str = "policy",
            model_xml: str | None = None) -> dict[Path, bytes]:
    """The pair (and the robot's MJCF, where the env has one) by the path each goes to."""
    files = {f"{prefix}.h": header, f"{prefix}.c": source}
    if model_xml is not None:
        files[f"{prefix}.xml"] = model_xml
    return {Path(out_dir) / name: text.encode() for name, text in files.items()}


__all__ = ["C_FLAGS", "C_TOLERANCE", "c_gates", "c_prefix", "c_sources", "c_files", "compile_c", "find_cc"]
