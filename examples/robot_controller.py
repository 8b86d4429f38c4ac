"""A fixed-rate controller that drives a native MuJoCo robot (reacher or ant) with an exported policy.

    python examples/robot_controller.py --policy policy.onnx [--episodes 16] [--steps N]
        [--no-realtime] [--seed 0]

Uses only crl_distill.runtime (numpy + onnxruntime), crl_distill.native and the `mujoco`
package: no JAX, no brax. The robot is the model the exported file carries (metadata `native`:
the training env's own MJCF with its timestep, gears and frame skip), simulated by MuJoCo
itself, so this is the sim-to-sim check a robot team runs before hardware. Starts and goals are
drawn from the distribution the file records for its env (the reacher's targets on a disc, the
ant's goals `goal_dist` away), and an ant that falls (torso height out of range) ends its
episode as in training. Printed per goal: reached or not and time at goal; then success_any and
time at goal with 95% intervals (the metrics `crl-distill eval --sim mujoco` reports for the
same file) and the loop's timing (inference time, period error p50/p99).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from crl_distill.errors import CrlDistillError
from crl_distill.metrics import episode_metrics, summarize
from crl_distill.native import NativeSim
from crl_distill.runtime import OnnxPolicy, PolicyError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--policy", required=True, help="exported policy (.onnx) for a robot with a "
                   "native MuJoCo model (reacher, ant)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="control steps per goal [the episode]")
    p.add_argument("--no-realtime", action="store_true", help="run as fast as possible")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    try:
        policy = OnnxPolicy(args.policy)
        spec = policy.metadata.get("native")
        if not spec:
            raise CrlDistillError(f"it controls {policy.env!r}, which has no native MuJoCo model")
        sim = NativeSim(spec)
        sim.reset(np.random.default_rng(0))  # fail now, not mid-run, if no starts are recorded
    except CrlDistillError as e:
        print(f"error: {args.policy}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    period = sim.control_period
    threshold = float(policy.metadata["success_threshold"])
    goal_idx = list(policy.metadata["goal_indices"])
    steps = args.steps or int(policy.metadata["episode_length"])
    rng = np.random.default_rng(args.seed)
    infer_us, period_err_us, rejected = [], [], 0
    success, dist = np.zeros((steps, args.episodes)), np.zeros((steps, args.episodes))
    ended = np.zeros((steps, args.episodes))
    for ep in range(args.episodes):
        goal = sim.reset(rng)[0]
        policy.reset()  # a fresh history (stacking student) and a zero state (GRU / LSTM student)
        next_tick = time.perf_counter()
        last_tick = None
        for t in range(steps):
            now = time.perf_counter()
            if last_tick is not None:
                period_err_us.append((now - last_tick - (0 if args.no_realtime else period)) * 1e6)
            last_tick = now
            t0 = time.perf_counter()
            try:
                # The file picks the elements its student observes from the full state.
                action = policy.act_env(np.concatenate([sim.state()[0], goal]))
            except PolicyError:  # a bad sensor reading: hold still rather than actuate garbage
                action, rejected = np.zeros(policy.action_size, np.float32), rejected + 1
            infer_us.append((time.perf_counter() - t0) * 1e6)
            sim.step(action[None])
            state = sim.state()
            dist[t, ep] = np.linalg.norm(state[0, goal_idx] - goal)
            success[t, ep] = dist[t, ep] < threshold
            ended[t, ep] = sim.terminated(state)[0]
            if ended[t, ep]:  # fell: the episode is over, as in training and evaluation
                dist[t:, ep] = dist[t, ep]
                break
            if not args.no_realtime:
                next_tick += period
                time.sleep(max(0.0, next_tick - time.perf_counter()))
        print(f"goal {ep + 1}: {'reached' if success[:, ep].any() else 'missed '}  time at goal "
              f"{int(success[:, ep].sum())}/{steps}  final distance {dist[-1, ep]:.3f} m"
              + ("  (fell)" if ended[:, ep].any() else ""))
    m = summarize(episode_metrics(success, ended, dist))
    pe = np.abs(np.asarray(period_err_us)) if period_err_us else np.zeros(1)
    print(f"success_any {m['success_any']:.3f} +- {m['success_any_ci95']:.3f}, time at goal "
          f"{m['time_at_goal']:.1f} +- {m['time_at_goal_ci95']:.1f} of {steps} over {args.episodes} "
          f"goals (threshold {threshold} m); rejected observations {rejected}")
    print(f"inference p50 {np.median(infer_us):.1f} us, p99 {np.quantile(infer_us, 0.99):.1f} us;"
          f" control period {period * 1e3:.0f} ms"
          + ("" if args.no_realtime else
             f", |period error| p50 {np.median(pe):.0f} us, p99 {np.quantile(pe, 0.99):.0f} us"))


if __name__ == "__main__":
    main()
