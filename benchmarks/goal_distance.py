"""How far can a teacher go? Success and time at goal against the commanded goal distance.

    python benchmarks/goal_distance.py --from runs/ant-paper [--env ant]
        [--distances 1,2,3,5,7.5,10] [--episodes 64] [--seed 0]
        [--out benchmarks/results/goal_distance_ant.json]

Evaluates one teacher (run directory: its best checkpoint; or a checkpoint file) with the
deterministic actor on `ENV:goal_dist=D` for each D, same seeds for every D (the goal direction
and start noise are the same; only the distance changes). CRL trains on hindsight goals from its
own trajectories, so the commanded distance during training only steers exploration; this
curve shows the distances the learned goal-reaching covers. Prints a table and writes the JSON
and a PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def teacher_checkpoint(source: Path) -> Path:
    """A run directory's best checkpoint (else its newest); a file is used as given."""
    if source.is_file():
        return source
    best = source / "checkpoints" / "best.npz"
    if best.is_file():
        return best
    ckpts = sorted((source / "checkpoints").glob("epoch-*.npz"))
    if not ckpts:
        raise SystemExit(f"{source}: no teacher checkpoint")
    return ckpts[-1]


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = [r["goal_dist"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].errorbar(d, [r["success_any"] for r in rows],
                     yerr=[r["success_any_ci95"] for r in rows], marker="o", capsize=3)
    axes[0].axhline(0.5, color="C3", lw=0.8, ls=":", label="0.5")
    axes[0].set(xlabel="goal distance (m)", ylabel="success_any", ylim=(-0.02, 1.02))
    axes[0].legend(loc="upper right")
    axes[1].errorbar(d, [r["time_at_goal"] for r in rows],
                     yerr=[r["time_at_goal_ci95"] for r in rows], marker="o", capsize=3, color="C2")
    axes[1].set(xlabel="goal distance (m)", ylabel="time at goal (steps of 1000)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from _common import machine_info, write_json

    from crl_distill.artifacts import load_artifact
    from crl_distill.evaluation import evaluate_artifact

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, required=True)
    p.add_argument("--env", default="ant", help="an env with a goal_dist option")
    p.add_argument("--distances", default="1,2,3,5,7.5,10")
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    ckpt = teacher_checkpoint(args.source)
    rows, teacher = [], load_artifact(ckpt)
    for d in (float(x) for x in args.distances.split(",")):
        r = evaluate_artifact(teacher, env=f"{args.env}:goal_dist={d:g}", episodes=args.episodes,
                              seed=args.seed)
        rows.append({"goal_dist": d, **{k: r[k] for k in r if k.startswith(
            ("success_any", "time_at_goal", "final_dist"))}})
        print(f"goal {d:5.1f} m: success_any {r['success_any']:.3f} +- {r['success_any_ci95']:.3f}"
              f"  time at goal {r['time_at_goal']:6.1f} +- {r['time_at_goal_ci95']:.1f}"
              f"  final distance {r['final_dist']:.2f} m", flush=True)
    out = args.out or Path(f"benchmarks/results/goal_distance_{args.env}.json")
    write_json(out, {"benchmark": "goal_distance", "source": str(ckpt), "env": args.env,
                     "episodes": args.episodes, "seed": args.seed, "rows": rows,
                     "machine": machine_info()})
    plot(rows, f"{args.env}: {ckpt} ({args.episodes} episodes per distance, same seeds)",
         out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
