"""Teacher checkpoint bytes and write seconds per epoch at the GPU preset's shapes.

    python benchmarks/checkpoint_size.py [--envs ant,humanoid] [--depths 4,64]
        [--write-cap-gb 1.5] [--orbax] [--out benchmarks/results/checkpoint_size.json]

BEFORE: the whole training carry (parameters, optimiser states, replay buffer, env states) in
one file every epoch, as the teacher wrote it until issue 17. AFTER: parameters, optimiser
states, counters and key every epoch, the replay share every `replay_checkpoint_every` epochs
(the GPU preset's), so an epoch costs params + replay / N on average.

Shapes come from `jax.eval_shape` of the agent's init (no training); the arrays are allocated
and written with the teacher's own writer into a temporary directory on this machine's disk.
Bytes are exact (from the shapes; checked against the file where one is written). A part
larger than --write-cap-gb is written at a fraction of its rows and its time scaled up
(marked "extrapolated"), so the benchmark fits in this machine's memory. --orbax also times
orbax's StandardCheckpointer on the per-epoch part, for comparison with our npz writer.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, write_json  # noqa: E402

from crl_distill.checkpoint import save_pytree  # noqa: E402
from crl_distill.envs import make  # noqa: E402
from crl_distill.teacher import configure  # noqa: E402
from crl_distill.teacher.crl import CRL  # noqa: E402


def nbytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree))


def shrink(tree, rows_frac: float):
    """The same pytree with every leaf's first (replay row / env) axis cut to a fraction."""
    def cut(x):
        if not x.shape or x.shape[0] < 2:
            return x
        return jax.ShapeDtypeStruct((max(1, int(x.shape[0] * rows_frac)), *x.shape[1:]), x.dtype)
    return jax.tree_util.tree_map(cut, tree)


def timed_write(tree_shape, directory: Path, name: str, cap_bytes: int) -> dict:
    """Allocate `tree_shape` (ones) and write it; seconds scaled up when written in part."""
    total = nbytes(tree_shape)
    frac = min(1.0, cap_bytes / total) if total else 1.0
    part = shrink(tree_shape, frac) if frac < 1.0 else tree_shape
    arrays = jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype), part)
    jax.block_until_ready(arrays)
    path = directory / name
    t0 = time.perf_counter()
    save_pytree(path, arrays, {"format": "benchmark"})
    seconds = time.perf_counter() - t0
    written = path.stat().st_size
    path.unlink()
    del arrays
    scale = total / max(nbytes(part), 1)
    return {"bytes": total, "file_bytes_written": written, "seconds": seconds * scale,
            "extrapolated": frac < 1.0}


def orbax_write(tree_shape, directory: Path) -> dict:
    import orbax.checkpoint as ocp

    arrays = jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype), tree_shape)
    ckptr = ocp.StandardCheckpointer()
    times = []
    for i in range(3):  # the first save includes orbax's own setup
        t0 = time.perf_counter()
        ckptr.save(directory / f"orbax-{i}", arrays)
        ckptr.wait_until_finished()
        times.append(time.perf_counter() - t0)
    ckptr.close()
    return {"first_seconds": times[0], "seconds": float(np.median(times[1:]))}


def measure(env_name: str, depth: int, cap_bytes: int, with_orbax: bool) -> dict:
    cfg = configure(env_name, depth=depth, platform="gpu")
    env = make(env_name)
    carry = jax.eval_shape(CRL(cfg, env).init, jax.random.PRNGKey(0))
    state = carry.replace(replay=None, env_state=None, episode=None)
    params = carry.train.replace(actor_opt=None, critic_opt=None, alpha_opt=None)
    data = carry.replace(train=None, key=None)
    every = cfg.replay_checkpoint_every
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        tmp = Path(tmp)
        before = timed_write(carry, tmp, "whole.npz", cap_bytes)
        per_epoch = timed_write(state, tmp, "epoch.npz", cap_bytes)
        replay = timed_write(data, tmp, "replay.npz", cap_bytes)
        orbax = orbax_write(state, tmp) if with_orbax else None
    after_mean = {"bytes": per_epoch["bytes"] + replay["bytes"] / every,
                  "seconds": per_epoch["seconds"] + replay["seconds"] / every}
    return {"env": env_name, "depth": depth, "num_envs": cfg.num_envs,
            "replay_capacity": cfg.replay_capacity, "obs_size": env.observation_size,
            "replay_checkpoint_every": every, "param_bytes": nbytes(params),
            "before_whole_carry": before, "after_params_opt": per_epoch, "after_replay": replay,
            "after_mean_per_epoch": after_mean, "orbax_params_opt": orbax}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", default="ant,humanoid")
    ap.add_argument("--depths", default="4,64")
    ap.add_argument("--write-cap-gb", type=float, default=1.5)
    ap.add_argument("--orbax", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/checkpoint_size.json")
    a = ap.parse_args()
    cap = int(a.write_cap_gb * 2**30)
    rows = [measure(e, int(d), cap, a.orbax) for e in a.envs.split(",") for d in a.depths.split(",")]
    mb = 2**20
    print(f"{'env':>9} {'depth':>5} | {'before MB':>10} {'s':>6} | {'params+opt MB':>13} {'s':>6} | "
          f"{'replay MB':>9} {'s':>6} every | {'after MB/epoch':>14} {'s/epoch':>7}")
    for r in rows:
        b, p, rp, m = (r["before_whole_carry"], r["after_params_opt"], r["after_replay"],
                       r["after_mean_per_epoch"])
        print(f"{r['env']:>9} {r['depth']:>5} | {b['bytes'] / mb:>10.1f} {b['seconds']:>6.2f} | "
              f"{p['bytes'] / mb:>13.1f} {p['seconds']:>6.2f} | {rp['bytes'] / mb:>9.1f} "
              f"{rp['seconds']:>6.2f} {r['replay_checkpoint_every']:>5} | {m['bytes'] / mb:>14.1f} "
              f"{m['seconds']:>7.2f}" + ("  (time partly extrapolated)" if b["extrapolated"] else ""))
        if r["orbax_params_opt"]:
            o = r["orbax_params_opt"]
            print(f"{'':>17} orbax StandardCheckpointer, params+opt: first {o['first_seconds']:.2f} s, "
                  f"then {o['seconds']:.2f} s (ours {p['seconds']:.2f} s)")
    write_json(a.out, {"machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
