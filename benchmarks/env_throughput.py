"""Environment throughput: env steps per second at 1, 64 and 1024 vmapped envs.

    python benchmarks/env_throughput.py [--envs pointmaze_u,ant] [--num-envs 1,64,1024]
                                        [--steps 1000] [--out benchmarks/results/env_throughput.json]

Each measurement is a jitted `lax.scan` of random actions over `--steps` steps (compile excluded,
best of 3). Runs unchanged on GPU.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, write_json  # noqa: E402

from crl_distill.envs import make, names  # noqa: E402


def measure(env_name: str, num_envs: int, steps: int, compiler_options: dict | None = None,
            repeats: int = 3) -> dict:
    """Env steps/s of `num_envs` vmapped envs over `steps` random-action steps (best of
    `repeats`, compile excluded), jitted with XLA `compiler_options`."""
    env = make(env_name)

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def rollout(key):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

        def body(s, k):
            a = jax.random.uniform(k, (num_envs, env.action_size), minval=-1, maxval=1)
            s = jax.vmap(env.step)(s, a)
            return s, s.metrics["success"].sum()

        state, succ = jax.lax.scan(body, state, jax.random.split(k_act, steps))
        return succ.sum() + state.obs.sum()

    t0 = time.perf_counter()
    rollout(jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        rollout(jax.random.PRNGKey(i + 1)).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return {
        "env": env_name,
        "num_envs": num_envs,
        "steps": steps,
        "compiler_options": compiler_options,
        "compile_s": compile_s,
        "seconds": best,
        "env_steps_per_s": num_envs * steps / best,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", default=",".join(names()))
    p.add_argument("--num-envs", default="1,64,1024")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results/env_throughput.json")
    args = p.parse_args()
    rows = []
    print(f"{'env':<20}{'envs':>6}{'steps/s':>14}{'compile s':>11}")
    for env_name in args.envs.split(","):
        for n in (int(x) for x in args.num_envs.split(",")):
            # Physics envs at 1024 x 1000 steps take minutes on 2 CPU cores; scale the horizon.
            steps = args.steps if (env_name.startswith("pointmaze") or n <= 64) else args.steps // 10
            r = measure(env_name, n, steps)
            rows.append(r)
            print(f"{env_name:<20}{n:>6}{r['env_steps_per_s']:>14,.0f}{r['compile_s']:>11.1f}",
                  flush=True)
    write_json(args.out, {"machine": machine_info(), "results": rows})


if __name__ == "__main__":
    main()
