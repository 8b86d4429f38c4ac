"""Depth scaling of the teacher: parameters, compile time, SGD steps/s and peak memory.

    python benchmarks/depth_scaling.py [--depths 4,16,64,256,1000] [--env pointmaze_u]
        [--batch-size 256] [--width 256] [--updates 2] [--out benchmarks/results/depth_scaling.json]

Each depth runs in a fresh subprocess so its peak resident memory (ru_maxrss; on GPU also the
device's peak bytes) is its own. Compile time is `jax.jit(epoch).lower(...).compile()`, timed
separately from running; the "time to first SGD step" adds building and prefilling the replay.
Parameter counts are checked against the closed-form count. Also writes a PNG beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
from crl_distill.envs import make
from crl_distill.teacher import configure
from crl_distill.teacher.crl import CRL
from crl_distill.teacher.train import teacher_param_counts

a = json.loads(sys.argv[1])
t_start = time.perf_counter()
cfg = configure(a["env"], depth=a["depth"], width=a["width"], batch_size=a["batch_size"],
                updates_per_iter=a["updates"], iters_per_epoch=1, num_envs=a["num_envs"],
                unroll_length=a["unroll"], replay_capacity=4 * a["unroll"], prefill_steps=a["unroll"],
                remat=a["remat"], dtype=a["dtype"])
env = make(cfg.env)
crl = CRL(cfg, env)
key = jax.random.PRNGKey(0)
carry_shape = jax.eval_shape(crl.init, key)
t0 = time.perf_counter()
compiled = jax.jit(crl.epoch, donate_argnums=0).lower(carry_shape).compile()
compile_s = time.perf_counter() - t0
carry = jax.jit(crl.init)(key)
jax.block_until_ready(carry)
first_step_s = time.perf_counter() - t_start  # everything before the first SGD step runs
carry, m = compiled(carry)          # warm-up run (first touch of memory)
jax.block_until_ready(m)
t0 = time.perf_counter()
reps = a["reps"]
for _ in range(reps):
    carry, m = compiled(carry)
jax.block_until_ready(m)
run_s = (time.perf_counter() - t0) / reps
counted = {k: sum(x.size for x in jax.tree_util.tree_leaves(v)) for k, v in
           (("actor", carry.train.actor), ("phi", carry.train.critic["phi"]),
            ("psi", carry.train.critic["psi"]))}
closed = teacher_param_counts(cfg, env)
dev = jax.devices()[0]
stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
print(json.dumps({
    "depth": a["depth"], "params": counted, "params_closed_form": closed,
    "params_total": sum(counted.values()), "params_match": counted == closed,
    "compile_s": compile_s, "time_to_first_sgd_step_s": first_step_s,
    "epoch_s": run_s, "sgd_steps_per_s": cfg.updates_per_iter / run_s,
    "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "device_peak_gib": (stats or {}).get("peak_bytes_in_use", 0) / 2**30 or None,
    "loss_finite": bool(jnp.isfinite(m["critic_loss"])),
}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--depths", default="4,16,64,256,1000")
    p.add_argument("--env", default="pointmaze_u")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--updates", type=int, default=2, help="SGD steps per timed epoch")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--unroll", type=int, default=10)
    p.add_argument("--remat", action="store_true")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="benchmarks/results/depth_scaling.json")
    args = p.parse_args()
    from _common import machine_info, write_json

    rows = []
    print(f"{'depth':>6}{'params':>14}{'closed form':>12}{'compile s':>11}{'1st step s':>11}"
          f"{'SGD/s':>9}{'peak GiB':>10}")
    for depth in (int(d) for d in args.depths.split(",")):
        payload = json.dumps({"env": args.env, "depth": depth, "width": args.width,
                              "batch_size": args.batch_size, "updates": args.updates,
                              "reps": args.reps, "num_envs": args.num_envs, "unroll": args.unroll,
                              "remat": args.remat, "dtype": args.dtype})
        res = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True,
                             text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if res.returncode != 0:
            print(f"depth {depth} failed:\n{res.stderr[-3000:]}")
            rows.append({"depth": depth, "error": res.stderr[-3000:]})
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{depth:>6}{r['params_total']:>14,}{'ok' if r['params_match'] else 'MISMATCH':>12}"
              f"{r['compile_s']:>11.1f}{r['time_to_first_sgd_step_s']:>11.1f}"
              f"{r['sgd_steps_per_s']:>9.2f}{r['peak_rss_gib']:>10.2f}", flush=True)
    ok = [r for r in rows if "error" not in r]
    by_depth = {r["depth"]: r for r in ok}
    summary = {}
    if 4 in by_depth and 1000 in by_depth:
        summary["compile_ratio_1000_vs_4"] = by_depth[1000]["compile_s"] / by_depth[4]["compile_s"]
        print(f"compile time ratio depth 1000 / depth 4: {summary['compile_ratio_1000_vs_4']:.2f}x"
              " (target <= 3x)")
    out = write_json(args.out, {"machine": machine_info(), "args": vars(args), "results": rows,
                                "summary": summary})
    if ok:
        plot(ok, out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = [r["depth"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(d, [r["compile_s"] for r in rows], marker="o")
    ax[0].set(xscale="log", title="epoch compile time (s)", xlabel="depth", ylim=(0, None))
    ax[1].plot(d, [r["sgd_steps_per_s"] for r in rows], marker="o", color="C2")
    ax[1].set(xscale="log", yscale="log", title="SGD steps / s", xlabel="depth")
    ax[2].plot(d, [r["peak_rss_gib"] for r in rows], marker="o", color="C3")
    ax[2].set(xscale="log", title="peak host memory (GiB)", xlabel="depth")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
