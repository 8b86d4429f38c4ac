"""Student retention vs size, and DAgger vs offline-only, measured side by side.

    python benchmarks/distill_retention.py --teacher RUN_DIR [--students 2x32,2x64,2x256,4x256]
        [--episodes 256] [--hard-students 2x32] [--hard-iterations 4] [--hard-steps 25]
        [--out benchmarks/results/distill_retention.json]

Without --teacher, a teacher is first trained with the CPU defaults of `crl-distill teacher`.
Part 1 distills every student with the default DAgger settings and reports retention
(student / teacher success_any on the same seeds). Part 2 repeats a harder setting (small
students, a small data budget) with mode=dagger and mode=offline, same seeds and SGD budget.
Writes the JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _brief(report: dict) -> list[dict]:
    keep = ("name", "actor_params", "flops_per_action", "eval/success_any", "eval/time_at_goal",
            "retention", "action_mse", "param_fraction_of_teacher_actor")
    return [{k: r[k] for k in keep} for r in report["students"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--teacher", default=None)
    p.add_argument("--env", default="pointmaze_u")
    p.add_argument("--students", default="2x32,2x64,2x256,4x256")
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--hard-students", default="2x32,2x64")
    p.add_argument("--hard-iterations", type=int, default=4)
    p.add_argument("--hard-steps", type=int, default=25)
    p.add_argument("--hard-sgd-steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/distill_retention.json")
    args = p.parse_args()
    from _common import machine_info, write_json

    from crl_distill.distill import DistillConfig, distill
    from crl_distill.teacher import configure, train_teacher

    work = Path(tempfile.mkdtemp(prefix="crl-distill-bench-"))
    teacher = args.teacher
    if teacher is None:
        teacher = work / "teacher"
        train_teacher(configure(args.env, seed=args.seed), teacher, progress=False)

    base = DistillConfig(eval_episodes=args.episodes, seed=args.seed)
    main_run = distill(teacher, students=args.students, out=work / "dagger", config=base,
                       progress=True)
    hard = {}
    for mode in ("dagger", "offline"):
        cfg = DistillConfig(mode=mode, iterations=args.hard_iterations,
                            steps_per_iter=args.hard_steps, sgd_steps_per_iter=args.hard_sgd_steps,
                            eval_episodes=args.episodes, seed=args.seed)
        hard[mode] = distill(teacher, students=args.hard_students, out=work / f"hard-{mode}",
                             config=cfg, progress=True).report
    t = main_run.report["teacher"]
    print(f"\nteacher success_any {t['eval/success_any']:.3f} ({t['actor_params']:,} actor params)")
    for r in _brief(main_run.report):
        print(f"  {r['name']:>6}: success_any {r['eval/success_any']:.3f} retention "
              f"{r['retention']:.3f}")
    print(f"harder setting ({args.hard_iterations} rounds x {args.hard_steps} steps x 64 envs, "
          f"{args.hard_sgd_steps} SGD steps/round):")
    for a, b in zip(_brief(hard["dagger"]), _brief(hard["offline"]), strict=True):
        print(f"  {a['name']:>6}: dagger {a['eval/success_any']:.3f} vs offline "
              f"{b['eval/success_any']:.3f}")
    out = write_json(args.out, {
        "machine": machine_info(), "args": vars(args), "teacher_source": str(teacher),
        "teacher": {k: t[k] for k in ("actor_params", "eval/success_any", "eval/time_at_goal")},
        "students": _brief(main_run.report),
        "hard": {m: _brief(r) for m, r in hard.items()},
        "hard_teacher_success_any": hard["dagger"]["teacher"]["eval/success_any"],
    })
    plot(main_run.report, hard, out.with_suffix(".png"))


def plot(main_report: dict, hard: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    rows = sorted(main_report["students"], key=lambda r: r["actor_params"])
    ax[0].plot([r["actor_params"] for r in rows], [r["retention"] for r in rows], marker="o")
    for r in rows:
        ax[0].annotate(r["name"], (r["actor_params"], r["retention"]), xytext=(4, 4),
                       textcoords="offset points", fontsize=8)
    ax[0].axhline(0.95, color="C3", ls=":", lw=0.8, label="95%")
    ax[0].set(xscale="log", xlabel="student actor params", ylabel="retention (success_any)",
              title="retention vs size (DAgger)")
    ax[0].legend()
    names = [r["name"] for r in hard["dagger"]["students"]]
    x = range(len(names))
    for i, mode in enumerate(("dagger", "offline")):
        ax[1].bar([j + 0.4 * i for j in x],
                  [r["eval/success_any"] for r in hard[mode]["students"]], 0.4, label=mode)
    ax[1].axhline(hard["dagger"]["teacher"]["eval/success_any"], color="gray", ls="--",
                  label="teacher")
    ax[1].set_xticks([j + 0.2 for j in x], names)
    ax[1].set(title="small data budget: DAgger vs offline", ylabel="success_any")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
