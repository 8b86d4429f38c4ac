"""C export: parity with the ONNX file and batch-1 latency, side by side in one process.

    python benchmarks/c_export.py --students runs/reacher-mjx-students [--names 2x64,2x256]
        [--calls 20000] [--out benchmarks/results/c_export.json]

For each student: `crl-distill export --format c` (gates: compile with -Wall -Wextra -Werror,
C vs ONNX max |diff| on the golden pairs + >= 1000 observations), then batch-1 latency p50/p99 of
    C harness   policy_act timed in a C loop (clock_gettime around each call)
    C ctypes    the same compiled code called from Python through ctypes
    OnnxPolicy  crl_distill.runtime.OnnxPolicy.act (checks, clipping)
    ORT raw     session.run on a [1, obs] float32 array (with a recurrent file's state fed
                back, `runtime.SessionStepper`)
A recurrent student (gru64, lstm64) is timed with its state stepping on from call to call.
Targets (issue 15): C harness p50 <= 2 us for 2x64; OnnxPolicy.act within 2x of raw session.run.
Prints a table and writes the JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

TIMER_C = r"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "PREFIX.h"

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 20000;
    double *t = malloc(sizeof(double) * (size_t)n);
    float obs[UP_OBS_SIZE], act[UP_ACTION_SIZE];
#ifdef UP_RECURRENT /* a recurrent student: its state steps on with every call, as on a robot */
    PREFIX_state s;
    PREFIX_reset(&s);
#define ACT() PREFIX_act(&s, obs, act)
#else
#define ACT() PREFIX_act(obs, act)
#endif
    for (int i = 0; i < UP_OBS_SIZE; ++i)
        obs[i] = 0.01f * (float)i;
    for (int k = 0; k < n; ++k) {
        struct timespec a, b;
        obs[k % UP_OBS_SIZE] += 1e-6f; /* a changing input: nothing is hoisted out of the loop */
        clock_gettime(CLOCK_MONOTONIC, &a);
        ACT();
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[k] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) * 1e-3;
    }
    qsort(t, (size_t)n, sizeof(double), cmp);
    printf("%.4f %.4f %g\n", t[n / 2], t[(int)(0.99 * (n - 1))], (double)act[0]);
    free(t);
    return 0;
}
"""


def timed(fn, calls: int) -> dict[str, float]:
    from crl_distill.timing import percentiles_us, time_calls

    return percentiles_us(time_calls(lambda _: fn(), None, calls, warmup=min(1000, calls)))


def measure(onnx_path: Path, c_paths: list[Path], calls: int) -> dict[str, dict[str, float]]:
    from crl_distill.export.c_export import C_FLAGS, c_prefix, find_cc
    from crl_distill.runtime import OnnxPolicy, SessionStepper

    prefix = c_prefix(onnx_path.stem)
    header, source = c_paths[0], c_paths[1]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "timer.c").write_text(TIMER_C.replace("PREFIX", prefix).replace("UP", prefix.upper()))
        cc = find_cc()
        subprocess.run([cc, *C_FLAGS, f"-I{header.parent}", str(source), str(d / "timer.c"),
                        "-o", str(d / "timer"), "-lm"], check=True)
        p50, p99, _ = subprocess.run([str(d / "timer"), str(calls)], check=True,
                                     capture_output=True, text=True).stdout.split()
        rows = {"C harness": {"p50_us": float(p50), "p99_us": float(p99)}}
        subprocess.run([cc, "-std=c99", "-O2", "-shared", "-fPIC", str(source), "-o",
                        str(d / "libpolicy.so"), "-lm"], check=True)
        lib = ctypes.CDLL(str(d / "libpolicy.so"))
        act_c = getattr(lib, f"{prefix}_act")
        policy = OnnxPolicy(onnx_path)
        # the graph's input (what C and the raw session take; for a student that stacks past
        # readings, those too) and one reading as OnnxPolicy.act takes it (it stacks them)
        obs = (np.arange(policy.input_size, dtype=np.float32) * 0.01)
        reading = (np.arange(policy.observation_size, dtype=np.float32) * 0.01)
        out = np.zeros(policy.action_size, np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        o_ptr, a_ptr = obs.ctypes.data_as(fp), out.ctypes.data_as(fp)
        # a recurrent student's caller-owned state struct: h [H] (then c [H]), contiguous floats
        rec = policy.recurrent
        state = np.zeros(len(rec["state_inputs"]) * rec["hidden_size"] if rec else 0, np.float32)
        args = (state.ctypes.data_as(fp), o_ptr, a_ptr) if rec else (o_ptr, a_ptr)
        rows["C ctypes"] = timed(lambda: act_c(*args), calls)
        rows["OnnxPolicy.act"] = timed(lambda: policy.act(reading), calls)
        outputs = [o.name for o in policy.session.get_outputs()]
        step = SessionStepper(policy.session, rec, outputs)
        batch = obs[None]
        rows["ORT session.run"] = timed(lambda: step(batch), calls)
        # one step from a zero state on each side, on the same graph input
        state[:] = 0.0
        act_c(*args)
        rows["C vs ORT |diff| (this obs)"] = {
            "max_abs": float(np.abs(out - SessionStepper(policy.session, rec, outputs)(batch)[0]).max())}
    return rows


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["C harness", "C ctypes", "OnnxPolicy.act", "ORT session.run"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    w = 0.8 / len(results)
    for i, r in enumerate(results):
        ax.bar(np.arange(len(kinds)) + i * w, [r["latency"][k]["p50_us"] for k in kinds], w,
               label=r["student"])
    ax.set_xticks(np.arange(len(kinds)) + 0.4 - w / 2, kinds)
    ax.set(ylabel="batch-1 p50 (us)", yscale="log", title="C export vs ONNX runtime, one process")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from _common import machine_info, write_json

    from crl_distill.export import export

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--students", type=Path, required=True, help="a student directory")
    p.add_argument("--names", default="2x64,2x256")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--episodes", type=int, default=16, help="closed-loop gate episodes")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/c_export.json"))
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names.split(","):
            res = export(args.students / f"student-{name}.npz", out=Path(tmp) / f"policy-{name}.onnx",
                         episodes=args.episodes, fmt="c")
            c = res.report["c"]
            lat = measure(res.path, res.c_paths, args.calls)
            results.append({"student": name, "parity": c, "latency": lat})
            print(f"{name}: C vs ONNX max |diff| {c['max_abs_diff']:.2e} on {c['observations']} obs "
                  f"({c['golden']} golden), compile warnings {c['warnings']}")
            for k, v in lat.items():
                if "p50_us" in v:
                    print(f"  {k:<16} p50 {v['p50_us']:8.2f} us  p99 {v['p99_us']:8.2f} us")
            ratio = lat["OnnxPolicy.act"]["p50_us"] / lat["ORT session.run"]["p50_us"]
            print(f"  OnnxPolicy.act / session.run p50: {ratio:.2f}x", flush=True)
            results[-1]["act_over_raw"] = ratio
    write_json(args.out, {"benchmark": "c_export", "students": str(args.students),
                          "results": results, "machine": machine_info()})
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
