"""The GPU measurements in one resumable run (~25 min on one H100-class GPU).

    python benchmarks/gpu_suite.py [--out benchmarks/results/gpu_suite.json] [--only NAME,...]
        [--step-timeout 590] [--big-maze-env-steps 3000000] [--retry] [--smoke]

Steps (each in a fresh subprocess, so compile time and peak memory are its own; each under
10 min; a step whose result is already in --out is skipped, so a killed suite resumes):

* throughput-ant-dD, D in 4, 16, 64, 256, 1000: the GPU preset on ant (512 envs, batch 256,
  width 256; bf16 from depth 64, remat from depth 256, where they cut memory and time):
  epoch compile seconds, env steps/s and SGD steps/s of whole training epochs (collect + SGD),
  peak device memory (`device.memory_stats()["peak_bytes_in_use"]`).
* throughput-humanoid-d64: the same on humanoid.
* learn-ant_big_maze-d4 / -d64: train to the same env-step budget, final success and wall time.

--smoke swaps in pointmaze_u and tiny sizes so the whole suite runs on a CPU in seconds (the
numbers then mean nothing; it checks the script). Writes JSON after every step and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

THROUGHPUT_DEPTHS = (4, 16, 64, 256, 1000)
SMOKE = dict(num_envs=8, unroll_length=5, batch_size=8, updates_per_iter=2, iters_per_epoch=1,
             replay_capacity=20, prefill_steps=5, num_eval_envs=4, width=32)


def steps(smoke: bool, big_maze_env_steps: int) -> list[dict]:
    """Every step of the suite: name, kind and the child's arguments."""
    def tput(env: str, depth: int) -> dict:
        return {"name": f"throughput-{env}-d{depth}", "kind": "throughput", "env": env,
                "depth": depth, "bf16": depth >= 64, "remat": depth >= 256}

    def learn(env: str, depth: int) -> dict:
        return {"name": f"learn-{env}-d{depth}", "kind": "learn", "env": env, "depth": depth,
                "bf16": depth >= 64, "remat": False, "env_steps": big_maze_env_steps}

    out = [tput("ant", d) for d in THROUGHPUT_DEPTHS] + [tput("humanoid", 64)]
    out += [learn("ant_big_maze", 4), learn("ant_big_maze", 64)]
    if smoke:
        out = [s for s in out if s["depth"] in (4, 64)]
        for s in out:
            s.update(env="pointmaze_u", depth=min(s["depth"], 8), smoke=True)
            if s["kind"] == "learn":
                s["env_steps"] = 200
    return out


def child(step: dict) -> dict:
    """Run one step in this process; returns its measurements."""
    import jax

    from crl_distill.envs import make
    from crl_distill.teacher import configure
    from crl_distill.teacher.crl import CRL, carry_shardings, make_mesh

    smoke = step.get("smoke", False)
    sizes = dict(SMOKE) if smoke else {"iters_per_epoch": 4}
    width = sizes.pop("width", None)
    kw = dict(depth=step["depth"], width=width, platform="cpu" if smoke else "gpu",
              dtype="bfloat16" if step["bf16"] else "float32", remat=step["remat"], **sizes)
    if step["kind"] == "learn":
        from crl_distill.teacher import train_teacher

        cfg = configure(step["env"], total_env_steps=step["env_steps"], **kw)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = train_teacher(cfg, Path(tmp) / "run", progress=False, logger="none")
            seconds = time.perf_counter() - t0
        last = res.metrics[-1]
        return {"env_steps": last["env_steps"], "seconds": seconds,
                "success_any": last["eval/success_any"], "time_at_goal": last["eval/time_at_goal"],
                "best_success_any": max(r["eval/success_any"] for r in res.metrics)}
    cfg = configure(step["env"], **kw)
    env = make(cfg.env)
    mesh = make_mesh()
    crl = CRL(cfg, env, mesh)
    key = jax.random.PRNGKey(0)
    shape = jax.eval_shape(crl.init, key)
    sh = carry_shardings(shape, mesh)
    t0 = time.perf_counter()
    init = jax.jit(crl.init, out_shardings=sh, compiler_options=env.jit_options).lower(key).compile()
    epoch = jax.jit(crl.epoch, donate_argnums=0, out_shardings=(sh, None),
                    compiler_options=env.jit_options).lower(shape).compile()
    compile_s = time.perf_counter() - t0
    carry = init(key)
    carry, m = epoch(carry)  # first touch of memory, not timed
    jax.block_until_ready(m)
    reps = 1 if smoke else 2
    t0 = time.perf_counter()
    for _ in range(reps):
        carry, m = epoch(carry)
    jax.block_until_ready(m)
    run_s = (time.perf_counter() - t0) / reps
    stats = jax.devices()[0].memory_stats() or {}
    return {"compile_s": compile_s, "epoch_s": run_s,
            "env_steps_per_s": cfg.env_steps_per_epoch / run_s,
            "sgd_steps_per_s": cfg.updates_per_iter * cfg.iters_per_epoch / run_s,
            "peak_device_gib": stats.get("peak_bytes_in_use", 0) / 2**30 or None,
            "critic_loss": float(m["critic_loss"]), "device": str(jax.devices()[0])}


def run_suite(out: Path, todo: list[dict], timeout_s: int, retry: bool) -> dict:
    from crl_distill.fileio import atomic_write_json

    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("steps", {})
    for step in todo:
        done = results["steps"].get(step["name"])
        if done is not None and ("error" not in done or not retry):
            print(f"{step['name']}: done before, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            res = subprocess.run([sys.executable, __file__, "--child", json.dumps(step)],
                                 capture_output=True, text=True, timeout=timeout_s,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            row = (json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0
                   else {"error": res.stderr[-2000:]})
        except subprocess.TimeoutExpired:
            row = {"error": f"timed out after {timeout_s} s"}
        row.update(step=step, wall_s=time.perf_counter() - t0)
        results["steps"][step["name"]] = row
        atomic_write_json(out, results)  # after every step: a killed suite keeps what it has
        print(f"{step['name']}: " + ("ERROR " + row["error"].splitlines()[-1] if "error" in row else
              ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))), flush=True)
    return results


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["steps"].values() if "error" not in r]
    tp = sorted((r for r in rows if r["step"]["kind"] == "throughput" and r["step"]["env"] != "humanoid"),
                key=lambda r: r["step"]["depth"])
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.6))
    d = [r["step"]["depth"] for r in tp]
    ax[0].plot(d, [r["env_steps_per_s"] for r in tp], marker="o")
    ax[0].set(xscale="log", yscale="log", title="training env steps / s", xlabel="depth")
    ax[1].plot(d, [r["sgd_steps_per_s"] for r in tp], marker="o", color="C2")
    ax[1].set(xscale="log", yscale="log", title="SGD steps / s", xlabel="depth")
    ax[2].plot(d, [r["compile_s"] for r in tp], marker="o", color="C1", label="compile s")
    ax[2].plot(d, [r["peak_device_gib"] or 0 for r in tp], marker="s", color="C3", label="peak GiB")
    ax[2].set(xscale="log", title="compile s, peak device GiB", xlabel="depth")
    ax[2].legend()
    learn = [r for r in rows if r["step"]["kind"] == "learn"]
    ax[3].bar([f"d{r['step']['depth']}" for r in learn], [r["success_any"] for r in learn])
    ax[3].set(title="ant_big_maze success at equal env steps", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/gpu_suite.json")
    p.add_argument("--only", default=None, help="comma-separated step names")
    p.add_argument("--step-timeout", type=int, default=590)
    p.add_argument("--big-maze-env-steps", type=int, default=3_000_000)
    p.add_argument("--retry", action="store_true", help="rerun steps that failed before")
    p.add_argument("--smoke", action="store_true", help="tiny CPU sizes: checks the script")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(json.loads(a.child))))
        return
    todo = steps(a.smoke, a.big_maze_env_steps)
    if a.only:
        names = set(a.only.split(","))
        unknown = names - {s["name"] for s in todo}
        if unknown:
            print(f"error: unknown steps {sorted(unknown)}", file=sys.stderr)
            sys.exit(2)
        todo = [s for s in todo if s["name"] in names]
    out = Path(a.out)
    results = run_suite(out, todo, a.step_timeout, a.retry)
    print(f"wrote {out}; {plot(results, out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
