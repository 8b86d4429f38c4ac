"""Acting with the critic, and students distilled from the critic's choices, side by side.

    python benchmarks/critic_acting.py --teacher runs/pm-u [--ks 4,16,64] [--uniform 16,64,256]
        [--students 2x64] [--label-samples 16] [--episodes 256] [--seed 0]
        [--out benchmarks/results/critic_acting.json]

On the same --episodes seeds: the teacher's deterministic actor (K = 1), the teacher acting
with its critic (best of K fixed candidates, each K in --ks; with --uniform, candidates spread
uniformly over the action box instead of around the actor), and for each student size a
student distilled from the actor's labels and one distilled from the critic's choices
(`--label critic`, same DAgger budget and seed). Prints success_any and time at goal with 95%
intervals and writes the JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

KEYS = ("success_any", "success_any_ci95", "time_at_goal", "time_at_goal_ci95")


def _p50_us(policy, calls: int = 5000) -> dict[str, float]:
    import numpy as np

    from crl_distill.timing import percentiles_us, time_calls

    obs = np.zeros(policy.observation_size, np.float32)
    return percentiles_us(time_calls(policy.act, obs, calls, warmup=200))


def _uniform_choice_policy(teacher, k: int, seed: int):
    """The critic's choice among the actor's mean and k fixed actions uniform over the action
    box: candidates far from the actor, to ask whether the critic ranks a better action
    anywhere (K-sample acting only looks near the actor's mean)."""
    import jax.numpy as jnp
    import numpy as np

    from crl_distill.teacher.crl import critic_choice

    crl, env, params = teacher.crl, teacher.env, teacher.params
    lo, hi = env.action_bounds
    fixed = jnp.asarray(np.random.default_rng(seed).uniform(lo, hi, (k, env.action_size)),
                        jnp.float32)
    n_s = env.state_size

    actor, phi, psi = crl.networks(params)

    def act(obs):
        mean, _ = actor(obs)
        cand = jnp.concatenate([jnp.tanh(mean)[:, None],
                                jnp.broadcast_to(fixed, (obs.shape[0], k, env.action_size))], 1)
        return critic_choice(cand, obs[:, :n_s], obs[:, n_s:], phi, psi, crl.cfg.energy)

    return act


def main() -> None:
    from _common import machine_info, write_json

    from crl_distill.artifacts import load_artifact
    from crl_distill.distill import DistillConfig, distill
    from crl_distill.evaluation import evaluate_artifact
    from crl_distill.teacher.acting import Acting

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="run directory or checkpoint")
    p.add_argument("--ks", default="4,16,64")
    p.add_argument("--uniform", default="",
                   help="also K values for the critic choosing among the actor's mean and K "
                        "fixed actions uniform over the action box")
    p.add_argument("--students", default="2x64")
    p.add_argument("--label-samples", type=int, default=16)
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency", action="store_true",
                   help="also export the teacher with K = 1 and the largest K and time batch-1 "
                        "OnnxPolicy.act (one thread) side by side")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/critic_acting.json"))
    args = p.parse_args()
    src = args.teacher
    if src.is_dir() and (src / "checkpoints" / "best.npz").is_file():
        src = src / "checkpoints" / "best.npz"
    rows = []

    def report(name: str, r: dict) -> None:
        rows.append({"name": name, **{k: r[k] for k in KEYS}})
        print(f"{name:<34} success_any {r['success_any']:.3f} +- {r['success_any_ci95']:.3f}  "
              f"time at goal {r['time_at_goal']:7.1f} +- {r['time_at_goal_ci95']:.1f}", flush=True)

    for k in [1, *map(int, args.ks.split(","))]:
        r = evaluate_artifact(load_artifact(src, acting=Acting(k)), episodes=args.episodes,
                              seed=args.seed)
        report("teacher actor" if k == 1 else f"teacher, critic picks best of {k}", r)
    if args.uniform:
        from crl_distill.evaluation import evaluate
        from crl_distill.teacher import load_teacher

        teacher = load_teacher(src)
        for k in map(int, args.uniform.split(",")):
            r = evaluate(teacher.env, _uniform_choice_policy(teacher, k, args.seed + 1),
                         args.episodes, args.seed)
            report(f"teacher, critic picks from mean + {k} uniform", r)
    work = Path(tempfile.mkdtemp(prefix="crl-critic-acting-"))
    latency = {}
    if args.latency:
        from crl_distill.export import export
        from crl_distill.runtime import OnnxPolicy

        for k in (1, max(map(int, args.ks.split(",")))):
            res = export(src, out=work / f"teacher-k{k}.onnx", episodes=16, act_samples=k)
            latency[k] = _p50_us(OnnxPolicy(res.path))
            print(f"teacher ONNX, K = {k}: batch-1 OnnxPolicy.act p50 {latency[k]['p50_us']:.1f} us, "
                  f"p99 {latency[k]['p99_us']:.1f} us (gates passed: {res.report['passed']})",
                  flush=True)
    for label in (("actor", "critic") if args.students else ()):
        cfg = DistillConfig(label=label, label_samples=args.label_samples,
                            eval_episodes=args.episodes, seed=args.seed)
        rep = distill(src, students=args.students, out=work / label, config=cfg, progress=False,
                      logger="none").report
        for s in rep["students"]:
            report(f"student {s['name']}, {label} labels"
                   + (f" (best of {args.label_samples})" if label == "critic" else ""),
                   {k: s[f"eval/{k}"] for k in KEYS})
    out = write_json(args.out, {"benchmark": "critic_acting", "teacher": str(src), "latency": latency,
                                "episodes": args.episodes, "seed": args.seed, "rows": rows,
                                "machine": machine_info()})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh(range(len(rows)), [r["success_any"] for r in rows],
            xerr=[r["success_any_ci95"] for r in rows], capsize=3)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows], fontsize=8)
    ax.axvline(0.95, color="C3", ls=":", lw=0.8)
    ax.set(xlabel=f"success_any ({args.episodes} episodes, same seeds)", xlim=(0, 1.02))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
