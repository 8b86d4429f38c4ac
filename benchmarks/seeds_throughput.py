"""Wall time of N seeds trained in one vmapped program against N runs one after another.

    python benchmarks/seeds_throughput.py [--env pointmaze_u] [--seeds 1,2,4] [--epochs 3]
        [--out benchmarks/results/seeds_throughput.json]

Both sides use the CPU preset (or the GPU preset on a GPU) with `--epochs`, the same seeds and
the same process, measured side by side. Reported per N: total wall time (compiles included),
the steady epoch time (mean over epochs after the first, from timing.jsonl) and env steps per
second per seed; the ratio sequential / vmapped is the figure. Writes JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _steady_epoch_s(run_dir: Path) -> float:
    rows = [json.loads(x) for x in (run_dir / "timing.jsonl").read_text().splitlines()]
    later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    return sum(later) / len(later)


def main() -> None:
    from _common import machine_info, write_json

    from crl_distill.teacher import configure, train_seeds, train_teacher

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="pointmaze_u")
    p.add_argument("--seeds", default="1,2,4", help="the N values to compare")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/seeds_throughput.json"))
    args = p.parse_args()
    cfg = configure(args.env, epochs=args.epochs)
    work = Path(tempfile.mkdtemp(prefix="crl-seeds-"))
    rows = []
    for n in map(int, args.seeds.split(",")):
        seeds = list(range(n))
        t0 = time.perf_counter()
        group = train_seeds(cfg, work / f"vmap-{n}", seeds, progress=False, logger="none")
        vmap_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = [train_teacher(configure(args.env, epochs=args.epochs, seed=s),
                                work / f"seq-{n}-{s}", progress=False, logger="none")
                  for s in seeds]
        seq_s = time.perf_counter() - t0
        vmap_epoch = _steady_epoch_s(group[0].run_dir)
        seq_epoch = sum(_steady_epoch_s(r.run_dir) for r in single)
        row = {"seeds": n, "vmapped_wall_s": vmap_s, "sequential_wall_s": seq_s,
               "wall_ratio": seq_s / vmap_s, "vmapped_epoch_s": vmap_epoch,
               "sequential_epoch_s": seq_epoch, "epoch_ratio": seq_epoch / vmap_epoch,
               "env_steps_per_s_per_seed_vmapped": cfg.env_steps_per_epoch / vmap_epoch,
               "env_steps_per_s_sequential": cfg.env_steps_per_epoch * n / seq_epoch}
        rows.append(row)
        print(f"N = {n}: vmapped {vmap_s:6.1f} s (epoch {vmap_epoch:5.2f} s) | sequential "
              f"{seq_s:6.1f} s (epochs {seq_epoch:5.2f} s) | sequential / vmapped: wall "
              f"{row['wall_ratio']:.2f}x, steady epoch {row['epoch_ratio']:.2f}x", flush=True)
    out = write_json(args.out, {"benchmark": "seeds_throughput", "env": args.env,
                                "epochs": args.epochs, "config": cfg.to_dict(), "rows": rows,
                                "machine": machine_info()})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend that needs no display

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ns = [r["seeds"] for r in rows]
    ax.plot(ns, [r["vmapped_wall_s"] for r in rows], marker="o", label="vmapped, one program")
    ax.plot(ns, [r["sequential_wall_s"] for r in rows], marker="s", label="one run after another")
    ax.set(xlabel="seeds", ylabel="wall time (s, compiles included)", xticks=ns,
           title=f"{args.env}: {args.epochs} epochs per seed, {cfg.num_envs} envs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
