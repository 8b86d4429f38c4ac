"""A recurrent (GRU) student against the history-stacked MLP at equal parameter count, in native
MuJoCo clean and under a robot's trouble; batch-1 latency of both in ONNX and C.

    python benchmarks/recurrent.py --teacher RUN_OR_CKPT [--spec robot] [--seeds 0,1,2]
        [--obs-state 0:15] [--mlp 2x64] [--mlp-history 2] [--cell gru] [--hidden auto]
        [--distill-under clean,robot] [--episodes 128] [--iterations 6] [--steps 42]
        [--envs 64] [--sgd-steps 300] [--bptt 16] [--calls 20000] [--work DIR]
        [--out benchmarks/results/recurrent_ENV.json]

Both students see the same teacher state elements (`--obs-state`; the ant's 15 joint positions
in the issue's setting) and the goal: the MLP also the `--mlp-history` readings before them
(today's `--obs-history`), the recurrent student only the current reading and its memory. The
recurrent student's hidden size is chosen so that its actor has the MLP's parameter count
(`--hidden auto`: the nearest). For every distillation condition (`--distill-under`: the clean
env and the env under `--spec`; the teacher labels from the clean state in both) and seed, each
student is distilled by DAgger with the same budget and seed, exported to ONNX and run in
native MuJoCo on the same `--episodes` starts and goals, clean and under the spec (the same model
draw per episode for every file). The teacher, exported the same way, gives the clean figure
retention divides by. Means over seeds get 95% Student-t intervals; recurrent minus MLP is
paired by seed. Batch-1 latency (seed 0's files, clean-distilled or the first condition): C
(`export --format c`, timed in a C loop and through ctypes), `OnnxPolicy.act` and raw
session.run, one process. Each finished cell is kept in the JSON, so a killed run continues.
Writes the JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_native_distill_args  # noqa: E402  (after the path it needs)

CONDITIONS = ("clean", "robot")
METRICS = ("time_at_goal", "success_any")
KINDS = ("mlp", "rnn")


def actor_params(cfg, obs_size: int, action_size: int) -> int:
    """Parameters of a student's policy network for inputs of `obs_size`."""
    import jax

    from crl_distill.student.model import count_params, init_student

    return count_params(jax.eval_shape(lambda: init_student(
        cfg, jax.random.PRNGKey(0), obs_size, obs_size, 0, action_size))["policy"])


def matched_hidden(cell: str, target: int, obs_size: int, action_size: int) -> int:
    """The hidden size whose `cell` student's actor parameter count is nearest `target`."""
    from crl_distill.student.model import StudentConfig

    return min(range(4, 513), key=lambda h: abs(
        actor_params(StudentConfig(1, h, cell=cell), obs_size, action_size) - target))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_native_distill_args(p)
    p.add_argument("--obs-state", default="0:15", help="teacher state elements both students see")
    p.add_argument("--mlp", default="2x64", help="the MLP student")
    p.add_argument("--mlp-history", type=int, default=2, help="past readings the MLP stacks")
    p.add_argument("--cell", default="gru", choices=("gru", "lstm"))
    p.add_argument("--hidden", default="auto", help="recurrent hidden size, or auto (equal params)")
    p.add_argument("--distill-under", default="clean,robot", help="conditions to distill in")
    p.add_argument("--bptt", type=int, default=16)
    p.add_argument("--calls", type=int, default=20000, help="latency calls per runner")
    args = p.parse_args()
    from _common import NativeBench
    from c_export import measure

    from crl_distill.distill import DistillConfig, distill
    from crl_distill.envs import make
    from crl_distill.export.onnx_export import export
    from crl_distill.obs_spec import ObsSpec
    from crl_distill.student.model import StudentConfig, parse_students
    from crl_distill.sweep import seed_interval

    bench = NativeBench(args, "recurrent", ("calls", "distill_under"))
    spec, teacher, env, out, work = bench.spec, bench.teacher, bench.env, bench.out, bench.work
    seeds, conditions, result = bench.seeds, bench.conditions, bench.result
    native, keep = bench.native, bench.keep
    under = [c for c in args.distill_under.split(",") if c]
    if not under or set(under) - set(conditions):
        raise SystemExit(f"--distill-under: a comma list of {', '.join(conditions)}")

    obs_mlp = ObsSpec.parse(args.obs_state, args.mlp_history)
    obs_rnn = ObsSpec.parse(args.obs_state, 0)
    base = make(env)
    [mlp_cfg] = parse_students(args.mlp)
    goal = base.goal_size
    mlp_in = obs_mlp.input_size(base.state_size, goal)
    rnn_in = obs_rnn.input_size(base.state_size, goal)
    mlp_params = actor_params(mlp_cfg, mlp_in, base.action_size)
    hidden = (matched_hidden(args.cell, mlp_params, rnn_in, base.action_size)
              if args.hidden == "auto" else int(args.hidden))
    rnn_params = actor_params(StudentConfig(1, hidden, cell=args.cell), rnn_in, base.action_size)
    rnn_name = f"{args.cell}{hidden}"
    students = {"mlp": (args.mlp, obs_mlp), "rnn": (rnn_name, obs_rnn)}

    result["students"] = {"mlp": {"name": args.mlp, "observation": obs_mlp.describe(base.state_size),
                                  "input_size": mlp_in, "actor_params": mlp_params},
                          "rnn": {"name": rnn_name, "observation": obs_rnn.describe(base.state_size),
                                  "input_size": rnn_in, "actor_params": rnn_params}}

    # the clean teacher on the evaluation's own starts (native MuJoCo), recorded with each
    # student as the figure retention divides by
    teacher_eval = bench.teacher_native()
    t_native = teacher_eval["time_at_goal"]
    print(f"students: {args.mlp} on {obs_mlp.describe(base.state_size)} ({mlp_params:,} actor "
          f"params) vs {rnn_name} on {obs_rnn.describe(base.state_size)}", flush=True)

    for mode in under:
        for seed in seeds:
            for kind, (name, obs) in students.items():
                key = f"{mode}/{kind}/{seed}"
                if key in result["cells"]:
                    continue
                t0 = time.perf_counter()
                cfg = DistillConfig(iterations=args.iterations, num_envs=args.envs,
                                    steps_per_iter=args.steps, sgd_steps_per_iter=args.sgd_steps,
                                    bptt=args.bptt, eval_episodes=args.distill_eval_episodes,
                                    seed=seed, perturb=args.spec if mode == "robot" else "")
                dres = distill(teacher, students=name, out=work / key.replace("/", "-"),
                               config=cfg, obs=obs, progress=False, time_jax=False,
                               teacher_eval=teacher_eval, logger="none")
                row = dres.report["students"][0]
                onnx = export(dres.student_paths[name], out=work / f"{key.replace('/', '-')}.onnx",
                              skip_gates=True).path
                cell = {"student": name, "onnx": str(onnx), "actor_params": row["actor_params"],
                        "native": native(onnx), "seconds": time.perf_counter() - t0}
                for c in conditions:
                    cell["native"][c]["retention_time_at_goal"] = (
                        cell["native"][c]["time_at_goal"] / t_native if t_native else float("nan"))
                result["cells"][key] = cell
                print(f"{key} ({name}, {cell['seconds']:.0f} s): native time at goal clean "
                      f"{cell['native']['clean']['time_at_goal']:.1f}, robot "
                      f"{cell['native']['robot']['time_at_goal']:.1f}", flush=True)
                keep()
    for kind in KINDS:  # the count the distillation reports is the one compared
        assert result["cells"][f"{under[0]}/{kind}/{seeds[0]}"]["actor_params"] == result[
            "students"][kind]["actor_params"]

    table, diff = {}, {}
    for mode in under:
        for c in conditions:
            for kind in KINDS:
                row = {}
                for m in (*METRICS, "retention_time_at_goal"):
                    row[m], row[f"{m}_ci95"] = seed_interval(
                        [result["cells"][f"{mode}/{kind}/{s}"]["native"][c][m] for s in seeds])
                table[f"{mode}-distilled/{kind}/{c}"] = row
            for m in METRICS:
                mean, half = seed_interval([result["cells"][f"{mode}/rnn/{s}"]["native"][c][m]
                                            - result["cells"][f"{mode}/mlp/{s}"]["native"][c][m]
                                            for s in seeds])
                diff[f"{mode}-distilled/{c}/{m}"] = {"mean": mean, "ci95": half}
    result["table"], result["rnn_minus_mlp"] = table, diff

    if "latency" not in result:
        lat_mode = "clean" if "clean" in under else under[0]
        result["latency"] = {}
        for kind in KINDS:
            name = students[kind][0]
            src = work / f"{lat_mode}-{kind}-{seeds[0]}" / f"student-{name}.npz"
            res = export(src, out=work / f"latency-{kind}" / "policy.onnx", fmt="c", episodes=16)
            result["latency"][kind] = {"student": name, "c_gate": res.report["c"],
                                       "gates": {k: v.get("passed") for k, v in
                                                 res.report["gates"].items() if isinstance(v, dict)},
                                       **measure(res.path, res.c_paths, args.calls)}
        keep()

    print(f"\n{env}, {len(seeds)} distillation seeds, {args.episodes} native episodes each; spec "
          f"{spec.describe()}")
    print(f"{'distilled':>9} | {'native':>6} | {args.mlp + ' (h' + str(args.mlp_history) + ')':>20} | "
          f"{rnn_name:>20} | {rnn_name} - {args.mlp} (paired)")
    for mode in under:
        for c in conditions:
            a, b = (table[f"{mode}-distilled/{k}/{c}"] for k in KINDS)
            d = diff[f"{mode}-distilled/{c}/time_at_goal"]
            print(f"{mode:>9} | {c:>6} | {a['time_at_goal']:9.1f} +- {a['time_at_goal_ci95']:6.1f} | "
                  f"{b['time_at_goal']:9.1f} +- {b['time_at_goal_ci95']:6.1f} | "
                  f"{d['mean']:+.1f} +- {d['ci95']:.1f}")
    print("batch-1 latency p50 / p99 (us):")
    for kind in KINDS:
        lat = result["latency"][kind]
        print(f"  {lat['student']:>8}: " + ", ".join(
            f"{k} {v['p50_us']:.2f} / {v['p99_us']:.2f}" for k, v in lat.items()
            if isinstance(v, dict) and "p50_us" in v))
    keep()
    plot(result, out.with_suffix(".png"), under)


def plot(result: dict, path: Path, under: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(under) + 1, figsize=(5 * (len(under) + 1), 3.8))
    t = result["teacher"]["native"]
    names = {k: result["students"][k]["name"] for k in KINDS}
    for ax, mode in zip(axes, under, strict=False):
        for i, kind in enumerate(KINDS):
            rows = [result["table"][f"{mode}-distilled/{kind}/{c}"] for c in CONDITIONS]
            ax.bar([j + 0.38 * i for j in range(2)], [r["time_at_goal"] for r in rows], 0.38,
                   yerr=[r["time_at_goal_ci95"] for r in rows], capsize=3,
                   label=f"{names[kind]} ({result['students'][kind]['actor_params']:,} params)")
        ax.scatter([0.19, 1.19], [t[c]["time_at_goal"] for c in CONDITIONS], marker="*", s=120,
                   c="k", zorder=3, label="teacher (full state)")
        ax.set_xticks([0.19, 1.19], ["native, clean", "native, " + result["args"]["spec"]])
        ax.set(ylabel="time at goal", title=f"distilled {mode}")
        ax.legend(fontsize=7)
    ax = axes[-1]
    runners = ["C harness", "C ctypes", "OnnxPolicy.act", "ORT session.run"]
    for i, kind in enumerate(KINDS):
        lat = result["latency"][kind]
        ax.bar([j + 0.38 * i for j in range(len(runners))], [lat[r]["p50_us"] for r in runners], 0.38,
               label=names[kind])
    ax.set_xticks([j + 0.19 for j in range(len(runners))], runners, fontsize=7)
    ax.set(ylabel="batch-1 p50 (us)", yscale="log", title="latency, one process")
    ax.legend(fontsize=7)
    fig.suptitle(f"{result['env']}: {names['rnn']} vs {names['mlp']}, "
                 f"{len(result['args']['seeds'].split(','))} seeds, 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
