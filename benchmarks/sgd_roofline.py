"""The CRL SGD step against its matmul roofline, and what share of an iteration it is.

    python benchmarks/sgd_roofline.py [--envs pointmaze_u,ant] [--rounds 7] [--calls 10]
                                      [--no-iteration] [--out benchmarks/results/sgd_roofline.json]

The roofline is the step's own matmuls (same shapes, forward and the backward products the step
needs) as a pure matmul + swish chain, jitted and timed in the same process, interleaved round by
round with the step, because the machine is shared and its speed drifts: only ratios measured side
by side mean anything. The step's FLOPs are counted in closed form (`step_matmul_flops`) and
checked against XLA's cost analysis of the compiled step and of the chain. "reference" is the step
as it was before: the L2 energy matrix through phi_i - psi_j as [B, B, D] and flax's LayerNorm
(autodiff backward) in the networks. Sub-parts
(critic grad, actor grad, Adam updates, hindsight sampling) and one whole `CRL.iteration` at the
CPU preset (collect + sampling + `updates_per_iter` steps) are timed the same way. Each figure is
the median over rounds of the mean of `--calls` calls (compile excluded), in wall time and in
process CPU time (less sensitive to other processes taking the cores); the load average is
recorded. CPU only in spirit (the figures are about this machine), but runs anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, write_json  # noqa: E402

from crl_distill.envs import make  # noqa: E402
from crl_distill.teacher import configure, networks  # noqa: E402
from crl_distill.teacher.config import NetConfig, TeacherConfig  # noqa: E402
from crl_distill.teacher.crl import (  # noqa: E402
    CRL,
    contrastive_loss,
    sample_hindsight,
)
from crl_distill.teacher.networks import ACTIVATIONS  # noqa: E402


def l2_direct(phi: jax.Array, psi: jax.Array) -> jax.Array:
    """The former L2 energy matrix: -||phi_i - psi_j|| through the [B, B', D] differences."""
    return -jnp.sqrt(jnp.sum((phi[:, None, :] - psi[None, :, :]) ** 2, -1) + 1e-12)


@contextlib.contextmanager
def former_layer_norm():
    """Networks traced inside this block use flax's nn.LayerNorm, as before (same parameters)."""
    saved = networks.LayerNorm
    networks.LayerNorm = lambda dtype, name: nn.LayerNorm(dtype=dtype, param_dtype=jnp.float32,
                                                          name=name)
    try:
        yield
    finally:
        networks.LayerNorm = saved


class ReferenceCRL(CRL):
    """CRL with the former L2 energy matrix; compiled inside `former_layer_norm`, the former
    step: the 'before' of this benchmark."""

    def critic_loss(self, critic: Any, batch: dict) -> tuple[jax.Array, dict]:
        phi, psi = self.embed(critic, batch["state"], batch["action"], batch["goal"])
        return contrastive_loss(l2_direct(phi, psi), self.cfg.contrastive_loss,
                                self.cfg.logsumexp_penalty)


# ----------------------------------------------------------------------------------------------
# FLOPs in closed form and the roofline chain
# ----------------------------------------------------------------------------------------------
def layer_shapes(net: NetConfig, in_dim: int, out_dim: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every Dense of `ResidualMLP(net, out_dim)` on inputs of `in_dim`."""
    return [(in_dim, net.width)] + [(net.width, net.width)] * net.depth + [(net.width, out_dim)]


def net_shapes(cfg: TeacherConfig, env: Any) -> dict[str, list[tuple[int, int]]]:
    s, a, g = env.state_size, env.action_size, env.goal_size
    return {"actor": layer_shapes(cfg.actor, s + g, 2 * a),
            "phi": layer_shapes(cfg.critic, s + a, cfg.repr_dim),
            "psi": layer_shapes(cfg.critic, g, cfg.repr_dim)}


def step_matmul_flops(cfg: TeacherConfig, env: Any) -> dict[str, float]:
    """The SGD step's matmul FLOPs (2 per multiply-add), from the layer shapes alone.

    Forward of a net: 2 B sum(in * out). Its backward: the weight gradients (the forward's
    FLOPs again) and the input gradients (again, less the first layer, whose input is data).
    Critic: phi and psi forward + backward, and the [B, D] x [D, B] energy matmul with its two
    backward products. Actor: actor forward + backward; phi forward and its input gradients
    only (down to the action, first layer included; the critic is held fixed); psi forward only.
    """
    b = cfg.batch_size
    fwd = {k: 2.0 * b * sum(i * o for i, o in v) for k, v in net_shapes(cfg, env).items()}
    first = {k: 2.0 * b * v[0][0] * v[0][1] for k, v in net_shapes(cfg, env).items()}
    energy = 3 * 2.0 * b * b * cfg.repr_dim  # every energy is one phi psi^T matmul
    critic = sum(3 * fwd[k] - first[k] for k in ("phi", "psi")) + energy
    actor = (3 * fwd["actor"] - first["actor"]) + 2 * fwd["phi"] + fwd["psi"]
    return {"critic": critic, "actor": actor, "total": critic + actor}


def chain_roofline(cfg: TeacherConfig, env: Any):
    """A jittable f(weights, batch) with the step's matmuls and nothing else but swish: the
    three nets as plain Dense chains (no bias, LayerNorm or skip), the critic's gradient through
    phi psi^T, the actor's through phi(s, actor(s, g)) . psi(g) with the critic held fixed.
    Returns f and its weights."""
    act = ACTIVATIONS[cfg.critic.activation]
    a_size = env.action_size

    def chain(ws, x):
        for w in ws[:-1]:
            x = act(x @ w)
        return x @ ws[-1]

    def critic_obj(critic, batch):
        phi = chain(critic["phi"], jnp.concatenate([batch["state"], batch["action"]], -1))
        return jnp.mean(phi @ chain(critic["psi"], batch["goal"]).T)

    def actor_obj(actor, critic, batch):
        action = chain(actor, jnp.concatenate([batch["state"], batch["goal"]], -1))[:, :a_size]
        phi = chain(critic["phi"], jnp.concatenate([batch["state"], action], -1))
        return jnp.mean(jnp.sum(phi * chain(critic["psi"], batch["goal"]), -1))

    def f(ws, batch):
        # The actor sees a second critic (the step's updated one), so psi(g) is not shared.
        return (jax.grad(critic_obj)(ws["critic"], batch),
                jax.grad(actor_obj)(ws["actor"], ws["critic_new"], batch))

    key = jax.random.PRNGKey(0)
    ws = {}
    for name, shapes in net_shapes(cfg, env).items():
        keys = jax.random.split(jax.random.fold_in(key, len(ws)), len(shapes))
        ws[name] = [jax.random.normal(k, s) / np.sqrt(s[0]) for k, s in zip(keys, shapes, strict=True)]
    critic = {"phi": ws["phi"], "psi": ws["psi"]}
    return f, {"actor": ws["actor"], "critic": critic,
               "critic_new": jax.tree_util.tree_map(lambda w: w + 0.0, critic)}


def compiled(fn, *args) -> Any:
    return jax.jit(fn).lower(*args).compile()


def xla_flops(exe) -> float:
    ca = exe.cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    return float(ca.get("flops", float("nan")))


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def interleaved(fns: dict[str, tuple[Any, tuple]], rounds: int, calls: int) -> dict[str, dict]:
    """ms per call of each jitted fn: median and min over `rounds` rounds of `calls` calls,
    the variants alternating within each round so that load drifts hit them alike."""
    for f, a in fns.values():
        jax.block_until_ready(f(*a))  # compile
        jax.block_until_ready(f(*a))
    res: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, (f, a) in fns.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(calls):
                out = f(*a)
            jax.block_until_ready(out)
            res[k].append((time.perf_counter() - t) / calls * 1e3)
            cpu[k].append((time.process_time() - c) / calls * 1e3)
    return {k: {"median_ms": float(np.median(v)), "min_ms": float(np.min(v)),
                "cpu_median_ms": float(np.median(cpu[k])), "ms": v} for k, v in res.items()}


def measure_env(env_name: str, rounds: int, calls: int, iteration: bool) -> dict[str, Any]:
    cfg = configure(env_name, platform="cpu")
    env = make(env_name)
    crl, ref = CRL(cfg, env), ReferenceCRL(cfg, env)
    carry = jax.jit(crl.init)(jax.random.PRNGKey(0))
    ts, b = carry.train, cfg.batch_size
    full = sample_hindsight(jax.random.PRNGKey(1), carry.replay, b, env, cfg.discount)
    batch = {k: full[k] for k in ("state", "action", "goal")}
    key = jax.random.PRNGKey(2)

    step = compiled(crl.sgd_step, ts, batch, key)
    with former_layer_norm():
        ref_step = compiled(ref.sgd_step, ts, batch, key)
    chain, ws = chain_roofline(cfg, env)
    chain = compiled(chain, ws, batch)
    c_grad = jax.jit(jax.grad(lambda c, bt: crl.critic_loss(c, bt)[0]))
    a_grad = jax.jit(jax.grad(lambda a, c, la, bt, k: crl.actor_loss(a, c, la, bt, k)[0]))

    def adam(ts, cg, ag):
        cu, co = crl.optimizer.update(cg, ts.critic_opt, ts.critic)
        au, ao = crl.optimizer.update(ag, ts.actor_opt, ts.actor)
        lu, lo = crl.alpha_optimizer.update(ts.log_alpha, ts.alpha_opt, ts.log_alpha)
        return (optax.apply_updates(ts.critic, cu), optax.apply_updates(ts.actor, au),
                optax.apply_updates(ts.log_alpha, lu), co, ao, lo)

    cg, ag = c_grad(ts.critic, batch), a_grad(ts.actor, ts.critic, ts.log_alpha, batch, key)
    sample = jax.jit(lambda k, r: sample_hindsight(k, r, b, env, cfg.discount))
    fns = {"step": (step, (ts, batch, key)), "reference_step": (ref_step, (ts, batch, key)),
           "roofline_chain": (chain, (ws, batch)),
           "critic_grad": (c_grad, (ts.critic, batch)),
           "actor_grad": (a_grad, (ts.actor, ts.critic, ts.log_alpha, batch, key)),
           "adam_updates": (jax.jit(adam), (ts, cg, ag)),
           "sample_hindsight": (sample, (key, carry.replay))}
    flops = step_matmul_flops(cfg, env)
    xla = {"step": xla_flops(step), "reference_step": xla_flops(ref_step),
           "roofline_chain": xla_flops(chain)}
    load_before = os.getloadavg()
    times = interleaved(fns, rounds, calls)
    out: dict[str, Any] = {
        "env": env_name, "batch_size": b, "actor_depth": cfg.actor.depth,
        "critic_depth": cfg.critic.depth, "width": cfg.critic.width,
        "matmul_gflop_closed_form": {k: v / 1e9 for k, v in flops.items()},
        "xla_gflop": {k: v / 1e9 for k, v in xla.items()},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(), "times": times,
    }
    g = flops["total"] / 1e9
    for k in ("step", "reference_step", "roofline_chain"):
        out[f"{k}_gflops_per_s"] = g / (times[k]["median_ms"] / 1e3)
    for k in ("step", "reference_step"):
        name = "step" if k == "step" else "reference"
        out[f"{name}_over_roofline"] = times[k]["median_ms"] / times["roofline_chain"]["median_ms"]
        out[f"{name}_over_roofline_cpu_time"] = (times[k]["cpu_median_ms"]
                                                 / times["roofline_chain"]["cpu_median_ms"])
    if iteration:
        out["iteration"] = measure_iteration(crl, carry, max(2, rounds // 2))
    return out


def measure_iteration(crl: CRL, carry: Any, rounds: int) -> dict[str, Any]:
    """One `CRL.iteration` and its two halves: collect (+ insert) and the SGD updates scan."""
    cfg, env = crl.cfg, crl.env

    def collect(c):
        return crl.collect(c.train.actor, c.env_state, c.episode, c.key, cfg.unroll_length,
                           critic=c.train.critic)

    def updates(c):
        # The update scan of `CRL.iteration`, on the current replay.
        def update(ts, k):
            k_batch, k_actor = jax.random.split(k)
            bt = sample_hindsight(k_batch, c.replay, cfg.batch_size, env, cfg.discount)
            return crl.sgd_step(ts, {k: bt[k] for k in ("state", "action", "goal")}, k_actor)

        return jax.lax.scan(update, c.train, jax.random.split(c.key, cfg.updates_per_iter))

    fns = {"iteration": (jax.jit(crl.iteration), (carry,)),
           "collect": (jax.jit(collect), (carry,)), "updates": (jax.jit(updates), (carry,))}
    t = interleaved(fns, rounds, 1)
    it = t["iteration"]["median_ms"]
    return {"updates_per_iter": cfg.updates_per_iter, "env_steps": cfg.env_steps_per_iter,
            "times": t, "sgd_fraction": t["updates"]["median_ms"] / it,
            "collect_fraction": t["collect"]["median_ms"] / it,
            "sgd_steps_per_s": cfg.updates_per_iter / (it / 1e3),
            "env_steps_per_s": cfg.env_steps_per_iter / (it / 1e3)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ["roofline_chain", "step", "reference_step", "critic_grad", "actor_grad",
             "adam_updates", "sample_hindsight"]
    fig, ax = plt.subplots(1, len(rows), figsize=(6 * len(rows), 3.8), squeeze=False)
    for a, r in zip(ax[0], rows, strict=True):
        ms = [r["times"][p]["median_ms"] for p in parts]
        a.barh(parts, ms, color=["tab:green", "tab:blue", "tab:gray"] + ["tab:orange"] * 4)
        a.invert_yaxis()
        a.set_xlabel("ms per call (median)")
        a.set_title(f"{r['env']}: step / roofline {r['step_over_roofline']:.2f} "
                    f"(before {r['reference_over_roofline']:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", default="pointmaze_u,ant")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--no-iteration", action="store_true", help="skip the whole-iteration timing")
    ap.add_argument("--out", default="benchmarks/results/sgd_roofline.json")
    args = ap.parse_args()
    rows = []
    for name in args.envs.split(","):
        r = measure_env(name, args.rounds, args.calls, not args.no_iteration)
        t = r["times"]
        print(f"{name}: step {t['step']['median_ms']:.2f} ms ({r['step_gflops_per_s']:.0f} GFLOP/s), "
              f"roofline chain {t['roofline_chain']['median_ms']:.2f} ms "
              f"({r['roofline_chain_gflops_per_s']:.0f} GFLOP/s): step / roofline "
              f"{r['step_over_roofline']:.2f}; before (direct L2) {t['reference_step']['median_ms']:.2f}"
              f" ms, {r['reference_over_roofline']:.2f}x; in CPU time {r['step_over_roofline_cpu_time']:.2f}"
              f" (before {r['reference_over_roofline_cpu_time']:.2f}); load {r['load_avg_before'][0]:.1f}")
        print(f"  matmul GFLOP closed form {r['matmul_gflop_closed_form']['total']:.3f}, XLA step "
              f"{r['xla_gflop']['step']:.3f}, XLA chain {r['xla_gflop']['roofline_chain']:.3f}; parts: "
              + ", ".join(f"{k} {t[k]['median_ms']:.2f}" for k in
                          ("critic_grad", "actor_grad", "adam_updates", "sample_hindsight")))
        if "iteration" in r:
            it = r["iteration"]
            print(f"  iteration {it['times']['iteration']['median_ms']:.0f} ms: updates "
                  f"{it['sgd_fraction']:.0%}, collect {it['collect_fraction']:.0%} "
                  f"({it['sgd_steps_per_s']:.0f} SGD steps/s, {it['env_steps_per_s']:.0f} env steps/s)")
        rows.append(r)
    out = Path(args.out)
    write_json(out, {"machine": machine_info(), "results": rows})
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
