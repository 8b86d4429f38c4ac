"""Teacher runs side by side at equal env steps (e.g. one setting changed, same seeds).

    python benchmarks/compare_runs.py runs/reacher-paper runs/reacher-alpha
        [--labels "alpha lr 3e-4,alpha lr 3e-3"] [--metrics eval/time_at_goal,entropy]
        [--out benchmarks/results/compare_runs.json]

Each argument is a run directory or a seed group (`crl-distill teacher --seeds 0,1,2 --out
DIR`: its seeds are averaged per epoch, with 95% Student-t intervals, and the seeds'
own values kept). Prints, per run, the first env-step count at which the first metric (the
seeds' mean) reached --target (if given) and each metric at the env steps all runs share;
writes the JSON and a PNG of each metric against env steps (bands: the intervals).
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
    from crl_distill.sweep import seed_interval
    from crl_distill.teacher.run_dir import seed_runs

    runs = []
    for run, label in zip(args.runs, labels, strict=True):
        members = seed_runs(run) or [run]
        per_seed = [[json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
                    for r in members]
        n = min(len(rows) for rows in per_seed)
        cfg = json.loads((members[0] / "config.json").read_text())["teacher"]
        entry = {"run": str(run), "label": label, "seeds": len(members),
                 "config": {k: v for k, v in cfg.items() if k != "seed"},
                 "env_steps": [per_seed[0][i]["env_steps"] for i in range(n)]}
        for m in metrics:
            cells = [seed_interval([rows[i].get(m, float("nan")) for rows in per_seed])
                     for i in range(n)]
            entry[m] = [c[0] for c in cells]
            entry[f"{m}_ci95"] = [c[1] for c in cells]
            entry[f"{m}_per_seed"] = [[rows[i].get(m) for i in range(n)] for rows in per_seed]
        if args.target is not None:
            hit = [s for s, v in zip(entry["env_steps"], entry[metrics[0]], strict=True)
                   if v >= args.target]
            entry["first_at_target"] = hit[0] if hit else None
        runs.append(entry)
    shared = min(max(r["env_steps"]) for r in runs)
    for r in runs:
        i = max(j for j, s in enumerate(r["env_steps"]) if s <= shared)
        r["at_shared_steps"] = {m: r[m][i] for m in metrics}
        r["at_shared_steps_ci95"] = {m: r[f"{m}_ci95"][i] for m in metrics}
        print(f"{r['label']:<22} ({r['seeds']} seed{'s' * (r['seeds'] > 1)}) at "
              f"{r['env_steps'][i]:,} env steps: "
              + ", ".join(f"{m} {r[m][i]:.3g} +- {r[f'{m}_ci95'][i]:.2g}" for m in metrics)
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
            if r["seeds"] > 1:
                lo = [v - h for v, h in zip(r[m], r[f"{m}_ci95"], strict=True)]
                hi = [v + h for v, h in zip(r[m], r[f"{m}_ci95"], strict=True)]
                ax.fill_between(r["env_steps"], lo, hi, alpha=0.2)
        ax.set(xlabel="env steps", title=m)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
