"""Teacher learning with the CLI's default preset: the curve and the time to a success target.

    python benchmarks/teacher_learning.py [--env pointmaze_u] [--metric success_any] [--target 0.9]
        [--seed 0] [--epochs E] [--depth D] [--run-dir DIR] [--out-dir benchmarks/results]

Runs exactly what `crl-distill teacher --env ENV` runs (same preset), then writes
teacher_learning_<env>.json (per-epoch wall time, env steps, success_any, time at goal) and copies
the run's learning_curve.png beside it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="pointmaze_u")
    p.add_argument("--metric", default="success_any", choices=("success_any", "time_at_goal"))
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--run-dir", default=None, help="keep the teacher run here (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--out-dir", default="benchmarks/results")
    args = p.parse_args()
    from _common import machine_info, write_json

    from crl_distill.teacher import configure, train_teacher

    cfg = configure(args.env, depth=args.depth, seed=args.seed, epochs=args.epochs)
    run_dir = Path(args.run_dir or Path(tempfile.mkdtemp(prefix="crl-teacher-")) / "run")
    t0 = time.perf_counter()
    curve = []

    def on_epoch(row: dict) -> None:
        curve.append({"wall_s": time.perf_counter() - t0, "epoch": row["epoch"],
                      "env_steps": row["env_steps"], "success_any": row["eval/success_any"],
                      "time_at_goal": row["eval/time_at_goal"], "final_dist": row["eval/final_dist"],
                      "critic_loss": row["critic_loss"]})
        print(f"epoch {row['epoch']:>3}  {curve[-1]['wall_s']:>6.0f}s  steps {row['env_steps']:>9,}"
              f"  success_any {row['eval/success_any']:.3f}  at goal {row['eval/time_at_goal']:.1f}",
              flush=True)

    train_teacher(cfg, run_dir, progress=False, on_epoch=on_epoch)
    hit = next((c for c in curve if c[args.metric] >= args.target), None)
    summary = {
        "env": args.env, "metric": args.metric, "target": args.target,
        "reached": hit is not None,
        "wall_s_to_target": hit["wall_s"] if hit else None,
        "env_steps_to_target": hit["env_steps"] if hit else None,
        "final_success_any": curve[-1]["success_any"], "best_success_any":
            max(c["success_any"] for c in curve), "final_time_at_goal": curve[-1]["time_at_goal"],
        "best_time_at_goal": max(c["time_at_goal"] for c in curve),
        "total_wall_s": curve[-1]["wall_s"], "run_dir": str(run_dir),
    }
    print(summary)
    out_dir = Path(args.out_dir)
    stem = f"teacher_learning_{args.env}".replace(":", "_").replace("=", "_").replace(",", "_")
    write_json(out_dir / f"{stem}.json",
               {"machine": machine_info(), "config": cfg.to_dict(), "summary": summary,
                "curve": curve})
    shutil.copy(run_dir / "learning_curve.png", out_dir / f"{stem}.png")


if __name__ == "__main__":
    main()
