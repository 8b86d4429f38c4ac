"""How much of a task's goal region can the arm's flange reach at all? (MuJoCo C engine, no JAX.)

    python benchmarks/arm_reachability.py [--env arm_reach] [--trials 3000] [--goals 4000]
        [--out benchmarks/results/arm_reachability.json]

From the task's fixed start pose, each trial holds one uniformly random action (joint targets
through the env's own action mapping) for 40 control steps (2 s) and records the flange position
every 4 steps; the figure is the fraction of goals drawn from the task's goal distribution that
lie within the success threshold (and within half of it) of some recorded position. It bounds
the success_any a policy can reach by steering to fixed targets; swinging through a goal on the
way could add a little.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    import jax
    import jax.numpy as jnp
    import mujoco
    from _common import write_json

    from crl_distill.envs import make
    from crl_distill.envs.arm import ARM_START

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="arm_reach")
    p.add_argument("--trials", type=int, default=3000)
    p.add_argument("--goals", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/arm_reachability.json"))
    args = p.parse_args()
    env = make(args.env)
    model = mujoco.MjModel.from_xml_string(env.model_xml())
    data = mujoco.MjData(model)
    flange = model.body("link7").id
    rng = np.random.default_rng(args.seed)
    to_ctrl = jax.jit(env._ctrl)
    points = []
    for _ in range(args.trials):
        mujoco.mj_resetData(model, data)
        data.qpos[:7] = ARM_START
        data.ctrl[:] = np.asarray(to_ctrl(jnp.asarray(rng.uniform(-1, 1, env.action_size),
                                                      jnp.float32)))
        for t in range(40):
            mujoco.mj_step(model, data, nstep=env.n_frames)
            if t % 4 == 3:
                points.append(data.xpos[flange].copy())
    points = np.asarray(points)
    goals = np.stack([np.asarray(env.sample_start(k)[1]) for k in
                      jax.random.split(jax.random.PRNGKey(args.seed), args.goals)])
    nearest = np.min(np.linalg.norm(goals[:, None] - points[None], axis=-1), axis=1)
    thr = env.success_threshold
    result = {"env": args.env, "trials": args.trials, "points": len(points), "goals": args.goals,
              "within_threshold": float((nearest < thr).mean()),
              "within_half_threshold": float((nearest < thr / 2).mean()),
              "threshold": thr, "reached_min": points.min(0).tolist(),
              "reached_max": points.max(0).tolist()}
    half = 100 * result["within_half_threshold"]
    print(f"{args.env}: {100 * result['within_threshold']:.1f}% of {args.goals} goals lie within "
          f"{thr} m of the {len(points):,} flange positions reached ({half:.1f}% within {thr / 2} m)")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
