"""Teacher runs side by side at equal env steps (e.g. one setting changed, same seed).

    python benchmarks/compare_runs.py runs/reacher-paper runs/reacher-alpha
        [--labels "alpha lr 3e-4,alpha lr 3e-3"] [--metrics eval/time_at_goal,entropy]
        [--out benchmarks/results/compare_runs.json]

Reads each run's metrics.jsonl and config.json; prints, per run, the first env-step count at
which each metric reached --target (if given) and its value at the env steps all runs share;
writes the JSON and a PNG of each metric against env steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from _common import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--labels", default=None)
    p.add_argument("--metrics", default="eval/time_at_goal,eval/success_any,entropy,accuracy")
    p.add_argument("--target", type=float, default=None, help="for the first metric")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/compare_runs.json"))
    args = p.parse_args()
    labels = args.labels.split(",") if args.labels else [r.name for r in args.runs]
    metrics = args.metrics.split(",")
    runs = []
    for run, label in zip(args.runs, labels, strict=True):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        cfg = json.loads((run / "config.json").read_text())["teacher"]
        entry = {"run": str(run), "label": label, "config": cfg,
                 "env_steps": [r["env_steps"] for r in rows],
                 **{m: [r.get(m) for r in rows] for m in metrics}}
        if args.target is not None:
            hit = [r["env_steps"] for r in rows if r[metrics[0]] >= args.target]
            entry["first_at_target"] = hit[0] if hit else None
        runs.append(entry)
    shared = min(max(r["env_steps"]) for r in runs)
    for r in runs:
        i = max(j for j, s in enumerate(r["env_steps"]) if s <= shared)
        r["at_shared_steps"] = {m: r[m][i] for m in metrics}
        print(f"{r['label']:<22} at {r['env_steps'][i]:,} env steps: "
              + ", ".join(f"{m} {r[m][i]:.3g}" for m in metrics)
              + (f"; {metrics[0]} first >= {args.target:g} at "
                 f"{r['first_at_target']:,} env steps" if r.get("first_at_target") else ""))
    out = write_json(args.out, {"benchmark": "compare_runs", "metrics": metrics,
                                "target": args.target, "runs": runs})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        for r in runs:
            ax.plot(r["env_steps"], r[m], marker=".", label=r["label"])
        ax.set(xlabel="env steps", title=m)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
