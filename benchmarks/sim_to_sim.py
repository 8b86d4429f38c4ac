"""Sim-to-sim: an exported policy in its training simulator and in native MuJoCo, side by side.

    python benchmarks/sim_to_sim.py --onnx policy.onnx [policy2.onnx ...] [--episodes 128]
        [--seed 0] [--out benchmarks/results/sim_to_sim.json]

For each file, `crl_distill.evaluation.evaluate_native` (what `crl-distill eval --sim mujoco`
runs): the same starts and goals, onnxruntime in both; the JAX env steps one simulator, MuJoCo's
C engine the other, both reading the model the file carries. Prints success_any and time at
goal with 95% intervals and the native / training-simulator ratio (goal: >= 0.8); writes the
JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

METRICS = ("success_any", "time_at_goal")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--onnx", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/sim_to_sim.json")
    args = p.parse_args()
    from _common import machine_info, write_json

    from crl_distill.evaluation import evaluate_native

    rows = []
    for path in args.onnx:
        r = evaluate_native(path, episodes=args.episodes, seed=args.seed)
        rows.append(r)
        print(f"{Path(path).name} ({r['env']}, {args.episodes} episodes, seed {args.seed}):")
        for m in METRICS:
            b, n = r["brax"], r["native"]
            print(f"  {m:>12}: training sim {b[m]:.3f} +- {b[m + '_ci95']:.3f}, native MuJoCo "
                  f"{n[m]:.3f} +- {n[m + '_ci95']:.3f}, native / training {r['ratio'][m]:.2f}")
    out = write_json(args.out, {"machine": machine_info(), "args": vars(args), "results": rows})
    plot(rows, out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
    labels = [f"{Path(r['source']).stem}\n{r['env']}" for r in rows]
    for ax, m in zip(axes, METRICS, strict=True):
        for i, side in enumerate(("brax", "native")):
            ax.bar([j + 0.4 * i for j in range(len(rows))], [r[side][m] for r in rows], 0.4,
                   yerr=[r[side][m + "_ci95"] for r in rows], capsize=3,
                   label="training simulator" if side == "brax" else "native MuJoCo")
        ax.set_xticks([j + 0.2 for j in range(len(rows))], labels, fontsize=8)
        ax.set(title=m, ylabel=m.replace("_", " "))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
