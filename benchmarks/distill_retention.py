"""Student retention vs size, and DAgger vs offline-only, measured side by side.

    python benchmarks/distill_retention.py --teacher RUN_DIR [--students 2x32,2x64,2x256,4x256]
        [--episodes 256] [--hard-teacher RUN_DIR] [--hard-students 2x8,2x16]
        [--hard-envs 64] [--hard-iterations 6] [--hard-steps 42] [--hard-seeds 0,1,2]
        [--out benchmarks/results/distill_retention.json]

Without --teacher, a teacher is first trained with the CPU defaults of `crl-distill teacher`.
Part 1 distills every student with the default DAgger settings and reports retention
(student / teacher success_any on the same seeds). Part 2 repeats a harder setting (its own
teacher if --hard-teacher is given, small students, a small data budget) with mode=dagger and
mode=offline: same seeds, same labels and SGD budget, for each of --hard-seeds; it reports the
mean difference over seeds with a 95% interval. An empty --students or --hard-students skips
that part. Writes the JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

METRICS = ("eval/success_any", "eval/time_at_goal")


def _brief(report: dict) -> list[dict]:
    keep = ("name", "actor_params", "flops_per_action", "eval/success_any", "eval/success_any_ci95",
            "eval/time_at_goal", "eval/time_at_goal_ci95", "retention", "retention_time_at_goal",
            "action_mse",
            "param_fraction_of_teacher_actor")
    return [{k: r[k] for k in keep} for r in report["students"]]


def compare(runs: dict[int, dict[str, list[dict]]]) -> list[dict]:
    """Per student: dagger - offline, averaged over seeds, with a 95% interval.

    Each seed's interval comes from its own episodes; seeds are independent, so the standard
    errors add in quadrature. Treating the two modes as unpaired makes the interval conservative.
    """
    seeds = sorted(runs)
    names = [r["name"] for r in runs[seeds[0]]["dagger"]]
    rows = []
    for i, name in enumerate(names):
        row: dict = {"name": name, "seeds": seeds}
        for m in METRICS:
            d = [runs[s]["dagger"][i][m] for s in seeds]
            o = [runs[s]["offline"][i][m] for s in seeds]
            var = {mode: sum((runs[s][mode][i][m + "_ci95"] / 1.96) ** 2 for s in seeds)
                   for mode in ("dagger", "offline")}
            short = m.split("/")[1]
            for mode in var:
                row[f"{mode}/{short}_ci95"] = 1.96 * math.sqrt(var[mode]) / len(seeds)
            row[f"dagger/{short}"] = sum(d) / len(d)
            row[f"offline/{short}"] = sum(o) / len(o)
            row[f"diff/{short}"] = row[f"dagger/{short}"] - row[f"offline/{short}"]
            row[f"diff/{short}_ci95"] = 1.96 * math.sqrt(sum(var.values())) / len(seeds)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--teacher", default=None)
    p.add_argument("--env", default="pointmaze_u")
    p.add_argument("--students", default="2x32,2x64,2x256,4x256")
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--hard-teacher", default=None, help="teacher for part 2 [--teacher]")
    p.add_argument("--hard-students", default="2x8,2x16")
    p.add_argument("--hard-envs", type=int, default=64)
    p.add_argument("--hard-iterations", type=int, default=6)
    p.add_argument("--hard-steps", type=int, default=42)
    p.add_argument("--hard-sgd-steps", type=int, default=300)
    p.add_argument("--hard-seeds", default="0")
    p.add_argument("--hard-obs-state", default=None,
                   help="part 2 students see only these teacher state elements, e.g. 0:7")
    p.add_argument("--hard-obs-history", type=int, default=0,
                   help="... plus this many past observations of them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/distill_retention.json")
    args = p.parse_args()
    from _common import machine_info, write_json

    from crl_distill.distill import DistillConfig, distill
    from crl_distill.obs_spec import ObsSpec
    from crl_distill.teacher import configure, train_teacher

    work = Path(tempfile.mkdtemp(prefix="crl-distill-bench-"))
    teacher = args.teacher
    if teacher is None:
        teacher = work / "teacher"
        train_teacher(configure(args.env, seed=args.seed), teacher, progress=False)
    result: dict = {"machine": machine_info(), "args": vars(args), "teacher_source": str(teacher)}

    main_report = None
    if args.students:
        base = DistillConfig(eval_episodes=args.episodes, seed=args.seed)
        main_report = distill(teacher, students=args.students, out=work / "dagger", config=base,
                              progress=True).report
        t = main_report["teacher"]
        result["teacher"] = {k: t[k] for k in ("actor_params", "eval/success_any",
                                               "eval/time_at_goal")}
        result["students"] = _brief(main_report)
        print(f"\nteacher success_any {t['eval/success_any']:.3f}, time at goal "
              f"{t['eval/time_at_goal']:.1f} ({t['actor_params']:,} actor params)")
        for r in result["students"]:
            print(f"  {r['name']:>6}: success_any {r['eval/success_any']:.3f} retention "
                  f"{r['retention']:.3f}; time at goal {r['eval/time_at_goal']:.1f} +- "
                  f"{r['eval/time_at_goal_ci95']:.1f}, retention {r['retention_time_at_goal']:.3f} "
                  f"({100 * r['param_fraction_of_teacher_actor']:.2f}% of the teacher's params)")

    if args.hard_students:
        hard_teacher = args.hard_teacher or teacher
        runs: dict[int, dict[str, list[dict]]] = {}
        teacher_success = {}
        for seed in [int(s) for s in args.hard_seeds.split(",")]:
            runs[seed] = {}
            for mode in ("dagger", "offline"):
                cfg = DistillConfig(mode=mode, iterations=args.hard_iterations,
                                    num_envs=args.hard_envs, steps_per_iter=args.hard_steps,
                                    sgd_steps_per_iter=args.hard_sgd_steps,
                                    eval_episodes=args.episodes, seed=seed)
                rep = distill(hard_teacher, students=args.hard_students,
                              out=work / f"hard-{mode}-{seed}", config=cfg, progress=True,
                              obs=ObsSpec.parse(args.hard_obs_state, args.hard_obs_history)).report
                runs[seed][mode] = _brief(rep)
                teacher_success[seed] = rep["teacher"]["eval/success_any"]
        rows = compare(runs)
        result["hard"] = {"teacher_source": str(hard_teacher), "runs": runs, "comparison": rows,
                          "teacher_success_any": teacher_success}
        print(f"harder setting ({args.hard_iterations} rounds x {args.hard_steps} steps x "
              f"{args.hard_envs} envs, {args.hard_sgd_steps} SGD steps/round, seeds "
              f"{args.hard_seeds}):")
        for r in rows:
            print(f"  {r['name']:>6}: success_any dagger {r['dagger/success_any']:.3f} vs offline "
                  f"{r['offline/success_any']:.3f} (diff {r['diff/success_any']:+.3f} +- "
                  f"{r['diff/success_any_ci95']:.3f}); time at goal {r['dagger/time_at_goal']:.1f} "
                  f"vs {r['offline/time_at_goal']:.1f} (diff {r['diff/time_at_goal']:+.1f} +- "
                  f"{r['diff/time_at_goal_ci95']:.1f})")
    out = write_json(args.out, result)
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("students", "hard") if k in result]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "students":
            rows = sorted(result["students"], key=lambda r: r["actor_params"])
            ax.plot([r["actor_params"] for r in rows], [r["retention"] for r in rows], marker="o",
                    label="success_any")
            ax.plot([r["actor_params"] for r in rows], [r["retention_time_at_goal"] for r in rows],
                    marker="s", label="time at goal")
            for r in rows:
                ax.annotate(r["name"], (r["actor_params"], r["retention"]), xytext=(4, 4),
                            textcoords="offset points", fontsize=8)
            ax.axhline(0.95, color="C3", ls=":", lw=0.8, label="95%")
            ax.set(xscale="log", xlabel="student actor params", ylabel="retention (student / teacher)",
                   title=f"retention vs size (DAgger), teacher "
                         f"{result['teacher']['actor_params']:,} params")
            ax.legend()
            continue
        rows = result["hard"]["comparison"]
        x = range(len(rows))
        for i, mode in enumerate(("dagger", "offline")):
            err = [r[f"{mode}/time_at_goal_ci95"] for r in rows]
            ax.bar([j + 0.4 * i for j in x], [r[f"{mode}/time_at_goal"] for r in rows], 0.4,
                   yerr=err, capsize=3, label=mode)
        ax.set_xticks([j + 0.2 for j in x], [r["name"] for r in rows])
        ax.set(title="harder setting: DAgger vs offline", ylabel="time at goal (steps)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
