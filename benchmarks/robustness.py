"""Students distilled clean against students distilled under a robot's trouble, both measured in
native MuJoCo clean and under that trouble: the robot-ready claim, side by side.

    python benchmarks/robustness.py --teacher RUN_OR_CKPT --spec robot --seeds 0,1,2
        [--students 2x64] [--obs-state 0:15] [--obs-history 2] [--episodes 128]
        [--iterations 6] [--steps 42] [--envs 64] [--sgd-steps 300] [--sweep-episodes 32]
        [--work DIR] [--out benchmarks/results/robustness_ENV.json]

For every distillation seed, one student is distilled by DAgger in the clean env and one in the
env under `--spec` (the teacher labels from the clean state in both; same seeds, budget and
observation), each is exported to ONNX and run in native MuJoCo on the same `--episodes` starts
and goals (evaluation seed 0) clean and under the spec (the same model draw per episode for
every file). The teacher is exported too and run the same way: its clean native time at goal is
what retention divides by (and what each student file records as its teacher's). Means over
seeds get 95% Student-t intervals; the robot minus clean difference is paired by seed. Then the
first robot-distilled student is swept factor by factor (`crl_distill.robustness`). Each
finished cell is kept in the JSON, so a killed run continues where it stopped. Writes the JSON,
a PNG of the comparison and the sweep's PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_native_distill_args  # noqa: E402  (after the path it needs)

MODES = ("clean", "robot")
METRICS = ("time_at_goal", "success_any")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_native_distill_args(p)
    p.add_argument("--students", default="2x64")
    p.add_argument("--obs-state", default=None, help="student sees these state elements, e.g. 0:15")
    p.add_argument("--obs-history", type=int, default=2)
    p.add_argument("--sweep-episodes", type=int, default=32, help="0 skips the factor sweep")
    args = p.parse_args()
    from _common import NativeBench

    from crl_distill.distill import DistillConfig, distill
    from crl_distill.export.onnx_export import export
    from crl_distill.obs_spec import ObsSpec
    from crl_distill.robustness import plot_robustness, robustness
    from crl_distill.sweep import seed_interval

    bench = NativeBench(args, "robustness", ("sweep_episodes",))
    spec, teacher, env, out, work = bench.spec, bench.teacher, bench.env, bench.out, bench.work
    seeds, conditions, result = bench.seeds, bench.conditions, bench.result
    native, keep = bench.native, bench.keep

    # the clean teacher on the evaluation's own starts (native MuJoCo), recorded with each
    # student as the figure retention divides by
    teacher_eval = bench.teacher_native()
    t_native = teacher_eval["time_at_goal"]

    obs = ObsSpec.parse(args.obs_state, args.obs_history)
    for seed in seeds:
        for mode in MODES:
            key = f"{mode}/{seed}"
            if key in result["cells"]:
                continue
            cfg = DistillConfig(iterations=args.iterations, num_envs=args.envs,
                                steps_per_iter=args.steps, sgd_steps_per_iter=args.sgd_steps,
                                eval_episodes=args.distill_eval_episodes, seed=seed,
                                perturb=args.spec if mode == "robot" else "")
            dres = distill(teacher, students=args.students, out=work / key.replace("/", "-"),
                           config=cfg, obs=obs, progress=False, time_jax=False,
                           teacher_eval=teacher_eval)
            name = next(iter(dres.student_paths))
            onnx = export(dres.student_paths[name], out=work / f"{mode}-{seed}.onnx",
                          skip_gates=True).path
            cell = {"student": name, "onnx": str(onnx), "native": native(onnx)}
            for c in conditions:
                cell["native"][c]["retention_time_at_goal"] = (
                    cell["native"][c]["time_at_goal"] / t_native if t_native else float("nan"))
            result["cells"][key] = cell
            print(f"{key}: native time at goal clean {cell['native']['clean']['time_at_goal']:.1f}"
                  f", robot {cell['native']['robot']['time_at_goal']:.1f}")
            keep()

    table = {}
    for mode in MODES:
        for c in conditions:
            row = {}
            for m in (*METRICS, "retention_time_at_goal"):
                row[m], row[f"{m}_ci95"] = seed_interval(
                    [result["cells"][f"{mode}/{s}"]["native"][c][m] for s in seeds])
            table[f"{mode}-distilled/{c}"] = row
    diff = {}
    for c in conditions:
        for m in METRICS:
            mean, half = seed_interval([result["cells"][f"robot/{s}"]["native"][c][m]
                                        - result["cells"][f"clean/{s}"]["native"][c][m]
                                        for s in seeds])
            diff[f"{c}/{m}"] = {"mean": mean, "ci95": half}
    result["table"], result["robot_minus_clean"] = table, diff
    goal = table["robot-distilled/robot"]["retention_time_at_goal"]
    result["goal"] = {"retention_floor": 0.8, "robot_student_retention_under_spec": goal,
                      "met": goal >= 0.8 and diff["robot/time_at_goal"]["mean"]
                      > diff["robot/time_at_goal"]["ci95"]}
    print(f"\n{env}, {len(seeds)} distillation seeds, {args.episodes} native episodes each; "
          f"spec {spec.describe()}")
    print(f"{'student':>16} | {'clean: time at goal':>22} | {'robot: time at goal':>22} | "
          "retention under robot")
    for mode in MODES:
        a, b = table[f"{mode}-distilled/clean"], table[f"{mode}-distilled/robot"]
        print(f"{mode + '-distilled':>16} | {a['time_at_goal']:10.1f} +- {a['time_at_goal_ci95']:7.1f}"
              f" | {b['time_at_goal']:10.1f} +- {b['time_at_goal_ci95']:7.1f} | "
              f"{b['retention_time_at_goal']:.2f} +- {b['retention_time_at_goal_ci95']:.2f}")
    d = diff["robot/time_at_goal"]
    print(f"robot minus clean-distilled under the spec: {d['mean']:+.1f} +- {d['ci95']:.1f} "
          f"(paired by seed); goal met: {result['goal']['met']}")
    if args.sweep_episodes and "sweep" not in result:
        sweep = robustness(result["cells"][f"robot/{seeds[0]}"]["onnx"], args.sweep_episodes)
        result["sweep"] = sweep
        plot_robustness(sweep, out.with_name(out.stem + "_sweep.png"))
    keep()
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    t = result["teacher"]["native"]
    for ax, m in zip(axes, METRICS, strict=True):
        for i, mode in enumerate(MODES):
            rows = [result["table"][f"{mode}-distilled/{c}"] for c in MODES]
            ax.bar([j + 0.38 * i for j in range(2)], [r[m] for r in rows], 0.38,
                   yerr=[r[f"{m}_ci95"] for r in rows], capsize=3, label=f"{mode}-distilled")
        ax.scatter([0.19, 1.19], [t[c][m] for c in MODES], marker="*", s=120, c="k", zorder=3,
                   label="teacher (ONNX)")
        if m == "time_at_goal":
            ax.axhline(0.8 * t["clean"][m], ls="--", c="gray", lw=0.8, label="0.8 x clean teacher")
        ax.set_xticks([0.19, 1.19], ["native, clean", "native, " + result["args"]["spec"]])
        ax.set(ylabel=m)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['env']}: students distilled clean vs under {result['args']['spec']}, "
                 f"{len(result['args']['seeds'].split(','))} seeds, 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
