"""Why pointmaze_u's teacher plateaus below 0.9: the far-end pairs of the U, in numbers.

    python benchmarks/pointmaze_diagnosis.py [--seed 0] [--epochs E] [--episode-length T]
        [--actor-goals hindsight|mixed] [--tag NAME] [--out-dir benchmarks/results]

Trains the `crl-distill teacher --env pointmaze_u` CPU preset (the same CRL functions, in a loop
of its own so the replay and parameters stay in hand), then measures:

* geometry: the fewest env steps from cell (1, 2)'s centre into the goal ball of cell (3, 1)'s
  centre (breadth-first search over the env's own dynamics, actions in {-1, 0, 1}^2);
* data: per epoch, how many replay episodes connect the two arms' far ends (a step in the top
  row's cells (1, 1)/(1, 2) followed later in the same episode by one in the bottom row's
  (3, 1)/(3, 2), or the reverse), and at the end the corridor distance between s and its
  hindsight goal g over 200 sampled batches;
* the policy: a start-cell x goal-cell success table (4096 episodes, the env's own draws);
* the critic: f(phi(s, a), psi(g)) for s at (1, 2)'s centre and g at (3, 1)'s centre over 16
  action directions, and its ranking of every free cell's centre as a goal from that start,
  against the corridor distance.

`--episode-length` and `--actor-goals` measure candidate fixes without editing the trainer:
`mixed` trains the actor on the hindsight goal for half of each batch and on another row's goal
for the other half (a monkeypatch of `CRL.actor_loss`, the diff proposed in the report).
Writes pointmaze_diagnosis[_TAG].json and .png under --out-dir.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

#: the U's arms' far ends: (row, col) cells on the same side of the wall between the arms
TOP_FAR = ((1, 1), (1, 2))
BOTTOM_FAR = ((3, 1), (3, 2))


def corridor_distances(walls: np.ndarray) -> dict[tuple[int, int], dict[tuple[int, int], int]]:
    """Cell-graph (4-neighbour) shortest path lengths between every pair of free cells."""
    h, w = walls.shape
    free = [(r, c) for r in range(h) for c in range(w) if not walls[r, c]]
    out = {}
    for src in free:
        dist = {src: 0}
        q = deque([src])
        while q:
            r, c = q.popleft()
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                n = (r + dr, c + dc)
                if 0 <= n[0] < h and 0 <= n[1] < w and not walls[n] and n not in dist:
                    dist[n] = dist[(r, c)] + 1
                    q.append(n)
        out[src] = dist
    return out


def fewest_steps(env, start_xy: np.ndarray, goal_xy: np.ndarray, limit: int = 400) -> int:
    """Breadth-first search over the env's own step function (batched, jitted): the fewest
    steps from `start_xy` until within `success_threshold` of `goal_xy`; -1 past `limit`."""
    import jax
    import jax.numpy as jnp

    acts = jnp.asarray([(ax, ay) for ax in (-1.0, 0.0, 1.0) for ay in (-1.0, 0.0, 1.0)])
    step = jax.jit(jax.vmap(jax.vmap(env._step, in_axes=(None, 0)), in_axes=(0, None)))
    frontier = np.asarray([start_xy], np.float32)
    seen = {tuple(np.round(start_xy, 4))}
    for t in range(1, limit + 1):
        nxt, _ = step(jnp.asarray(frontier), acts)
        nxt = np.asarray(nxt).reshape(-1, 2)
        if (np.linalg.norm(nxt - goal_xy, axis=1) < env.success_threshold).any():
            return t
        keep = []
        for p in nxt:
            k = tuple(np.round(p, 4))
            if k not in seen:
                seen.add(k)
                keep.append(p)
        if not keep:
            return -1
        frontier = np.asarray(keep, np.float32)
    return -1


def cells_of(xy: np.ndarray) -> np.ndarray:
    """[..., 2] (x, y) -> [..., 2] int (row, col)."""
    return np.stack([np.floor(xy[..., 1]), np.floor(xy[..., 0])], -1).astype(np.int64)


def in_cells(cells: np.ndarray, which: tuple[tuple[int, int], ...]) -> np.ndarray:
    return np.any([(cells[..., 0] == r) & (cells[..., 1] == c) for r, c in which], axis=0)


def connecting_episodes(replay, state_size: int) -> dict[str, int]:
    """Replay episodes (env column x episode id) that visit one arm's far end and, later in the
    same episode, the other's; and how many episodes the replay holds."""
    obs = np.asarray(replay.obs)
    ep = np.asarray(replay.episode)
    size, insert, cap = int(replay.size), int(replay.insert), obs.shape[0]
    order = (insert - size + np.arange(size)) % cap  # oldest first
    obs, ep = obs[order], ep[order]
    cells = cells_of(obs[..., :state_size])
    top, bottom = in_cells(cells, TOP_FAR), in_cells(cells, BOTTOM_FAR)
    connect = episodes = 0
    for n in range(obs.shape[1]):
        for e in np.unique(ep[:, n]):
            rows = np.flatnonzero(ep[:, n] == e)
            episodes += 1
            t_top, t_bot = rows[top[rows, n]], rows[bottom[rows, n]]
            if len(t_top) and len(t_bot) and (t_top.min() < t_bot.max() or t_bot.min() < t_top.max()):
                connect += 1
    return {"episodes": episodes, "connecting": connect}


def hindsight_stats(crl, replay, env, dist_table, batches: int = 200) -> dict:
    """Corridor distance between s and its hindsight goal g over `batches` sampled batches."""
    import jax

    from crl_distill.teacher.crl import sample_hindsight

    sample = jax.jit(lambda k: sample_hindsight(k, replay, crl.cfg.batch_size, env, crl.cfg.discount))
    s_cells, g_cells = [], []
    for b in range(batches):
        out = jax.device_get(sample(jax.random.PRNGKey(1000 + b)))
        s_cells.append(cells_of(np.asarray(out["state"])))
        g_cells.append(cells_of(np.asarray(out["goal"])))
    s, g = np.concatenate(s_cells), np.concatenate(g_cells)
    d = np.array([dist_table[tuple(a)][tuple(b)] for a, b in zip(s, g, strict=True)])
    far = (in_cells(s, TOP_FAR) & in_cells(g, BOTTOM_FAR)) | (in_cells(s, BOTTOM_FAR) & in_cells(g, TOP_FAR))
    return {"pairs": int(len(d)), "corridor_distance_hist": np.bincount(d, minlength=7).tolist(),
            "far_end_pairs": int(far.sum()), "far_end_fraction": float(far.mean())}


def pair_table(crl, params, env, free, episodes: int = 4096, seed: int = 123) -> dict:
    """Success of the deterministic actor per (start cell, goal cell) over the env's own draws."""
    import jax

    from crl_distill.evaluation import episode_keys, rollout_jax

    keys = episode_keys(seed, episodes)
    obs0 = np.asarray(jax.vmap(env.reset)(keys).obs)
    per = jax.device_get(jax.jit(lambda k: rollout_jax(env, crl.acting_policy(params), k,
                                                       record_obs=True))(keys))
    sc, gc = cells_of(obs0[:, :2]), cells_of(obs0[:, 2:4])
    # Where the failing far-end episodes end: the cell of the last observed position.
    obs = np.asarray(per.pop("obs"))
    last = cells_of(obs[-1, :, :2])
    far = ((in_cells(sc, TOP_FAR) & in_cells(gc, BOTTOM_FAR))
           | (in_cells(sc, BOTTOM_FAR) & in_cells(gc, TOP_FAR)))
    failed = far & (np.asarray(per["success_any"]) == 0)
    pick = np.flatnonzero(in_cells(sc, ((1, 2),)) & in_cells(gc, ((3, 1),)) & failed)
    trace = obs[::5, pick[0], :2].round(2).tolist() if len(pick) else []
    ends: dict[str, int] = {}
    for c in last[failed]:
        ends[str(tuple(map(int, c)))] = ends.get(str(tuple(map(int, c))), 0) + 1
    idx = {tuple(c): i for i, c in enumerate(free)}
    n = np.zeros((len(free), len(free)))
    ok = np.zeros_like(n)
    for a, b, s in zip(sc, gc, np.asarray(per["success_any"]), strict=True):
        n[idx[tuple(a)], idx[tuple(b)]] += 1
        ok[idx[tuple(a)], idx[tuple(b)]] += s
    rate = np.where(n > 0, ok / np.maximum(n, 1), np.nan)
    return {"cells": [list(map(int, c)) for c in free], "episodes": n.tolist(), "success": rate.tolist(),
            "far_end_failed_episodes": int(failed.sum()), "far_end_episodes": int(far.sum()),
            "far_end_failures_end_in": ends, "failing_1_2_to_3_1_every_5th_xy": trace,
            "overall": float(np.mean(per["success_any"])), "overall_ci95":
            float(1.96 * np.std(per["success_any"], ddof=1) / np.sqrt(episodes))}


def critic_probe(crl, params, free, dist_table) -> dict:
    """The critic at s = centre of (1, 2): energies of 16 action directions toward g = centre of
    (3, 1), and its ranking of every free cell's centre as a goal (actor's action) against the
    corridor distance."""
    import jax.numpy as jnp

    s = jnp.asarray([[2.5, 1.5]])
    g = jnp.asarray([[1.5, 3.5]])
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    acts = jnp.asarray(np.stack([np.cos(ang), np.sin(ang)], -1), jnp.float32)
    phi, psi = crl.embed(params["critic"], jnp.repeat(s, 16, 0), acts, jnp.repeat(g, 16, 0))
    from crl_distill.teacher.crl import energy_pairs

    e = np.asarray(energy_pairs(phi, psi, crl.cfg.energy))
    best = acts[int(np.argmax(e))]
    centres = jnp.asarray([[c + 0.5, r + 0.5] for r, c in free], jnp.float32)
    mean, _ = crl.actor.apply(params["actor"], jnp.concatenate([jnp.repeat(s, len(free), 0), centres], -1))
    phi_g, psi_g = crl.embed(params["critic"], jnp.repeat(s, len(free), 0), jnp.tanh(mean), centres)
    eg = np.asarray(energy_pairs(phi_g, psi_g, crl.cfg.energy))
    actor_a = np.asarray(jnp.tanh(mean[free.tolist().index([3, 1])]))
    corridor = np.array([dist_table[(1, 2)][tuple(c)] for c in free])
    from scipy.stats import spearmanr

    return {"directions_deg": np.degrees(ang).tolist(), "energy_by_direction": e.tolist(),
            "best_direction": np.asarray(best).tolist(),
            "energy_right": float(e[0]), "energy_down": float(e[4]), "energy_left": float(e[8]),
            "actor_action_to_3_1": actor_a.tolist(),
            "goal_energy": eg.tolist(), "goal_corridor_distance": corridor.tolist(),
            "spearman_energy_vs_corridor": float(spearmanr(-eg, corridor).statistic)}


def mixed_actor_goals(crl_cls) -> None:
    """Monkeypatch: the actor's loss on the hindsight goal for the first half of the batch and on
    the next row's goal (another trajectory's state: any pair of cells) for the second half."""
    import jax.numpy as jnp

    original = crl_cls.actor_loss

    def actor_loss(self, actor, critic, log_alpha, batch, key):
        half = batch["goal"].shape[0] // 2
        goal = jnp.concatenate([batch["goal"][:half], jnp.roll(batch["goal"], 1, 0)[half:]])
        return original(self, actor, critic, log_alpha, {**batch, "goal": goal}, key)

    crl_cls.actor_loss = actor_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--episode-length", type=int, default=None)
    p.add_argument("--actor-goals", choices=("hindsight", "mixed"), default="hindsight")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a TeacherConfig override (e.g. replay_capacity=10000)")
    p.add_argument("--tag", default="")
    p.add_argument("--out-dir", default="benchmarks/results")
    args = p.parse_args()

    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _common import machine_info, write_json

    from crl_distill.envs import make
    from crl_distill.envs.mazes import free_cells
    from crl_distill.envs.pointmaze import PointMaze
    from crl_distill.teacher import configure
    from crl_distill.teacher.crl import CRL

    overrides = {}
    for item in args.set:
        k, v = item.split("=", 1)
        kind = type(getattr(configure("pointmaze_u", platform="cpu"), k))
        overrides[k] = v if kind is str else kind(float(v))
    cfg = configure("pointmaze_u", platform="cpu", seed=args.seed, epochs=args.epochs, **overrides)
    env = make(cfg.env)
    if args.episode_length is not None:
        env = PointMaze("u", episode_length=args.episode_length, max_speed=env.max_speed)
    if args.actor_goals == "mixed":
        mixed_actor_goals(CRL)
    free = free_cells(("#" * 5, "#...#", "###.#", "#...#", "#" * 5))
    dist_table = corridor_distances(env._walls_np)

    geometry = {"fewest_steps_1_2_to_3_1": fewest_steps(env, np.array([2.5, 1.5]), np.array([1.5, 3.5])),
                "fewest_steps_1_1_to_3_1": fewest_steps(env, np.array([1.5, 1.5]), np.array([1.5, 3.5])),
                "corridor_cells_1_2_to_3_1": dist_table[(1, 2)][(3, 1)],
                "episode_length": env.episode_length, "max_speed": env.max_speed}
    print("geometry", geometry, flush=True)

    crl = CRL(cfg, env)
    carry = jax.jit(crl.init)(jax.random.PRNGKey(cfg.seed))
    epoch_fn = jax.jit(crl.epoch, donate_argnums=0)
    evaluate = jax.jit(crl.evaluate)
    curve = []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        carry, m = epoch_fn(carry)
        ev = jax.device_get(evaluate(carry.train.actor, jax.random.fold_in(
            jax.random.PRNGKey(cfg.seed + 1), epoch)))
        conn = connecting_episodes(carry.replay, env.state_size)
        row = {"epoch": epoch, "wall_s": time.perf_counter() - t0, "env_steps": int(carry.train.env_steps),
               "sgd_steps": int(carry.train.sgd_steps), "success_any": float(ev["success_any"]),
               "critic_accuracy": float(m["accuracy"]), "entropy": float(m["entropy"]),
               "replay_episodes": conn["episodes"], "connecting_episodes": conn["connecting"]}
        curve.append(row)
        print(row, flush=True)
    params = {"actor": carry.train.actor, "critic": carry.train.critic}
    hs = hindsight_stats(crl, carry.replay, env, dist_table)
    print("hindsight", hs, flush=True)
    table = pair_table(crl, params, env, free)
    print("pairs: overall", table["overall"], "+-", table["overall_ci95"], "; far-end failures",
          table["far_end_failed_episodes"], "of", table["far_end_episodes"], "end in",
          table["far_end_failures_end_in"], flush=True)
    print("a failing (1, 2) -> (3, 1) episode, x, y every 5th step:",
          table["failing_1_2_to_3_1_every_5th_xy"], flush=True)
    for i, c in enumerate(free):
        print(f"  start {tuple(map(int, c))}: " + " ".join("  -  " if np.isnan(v) else f"{v:5.2f}"
                                                 for v in table["success"][i]), flush=True)
    probe = critic_probe(crl, params, free, dist_table)
    print("critic", {k: probe[k] for k in ("best_direction", "energy_right", "energy_down",
                                          "energy_left", "actor_action_to_3_1",
                                          "spearman_energy_vs_corridor")}, flush=True)

    out_dir = Path(args.out_dir)
    stem = "pointmaze_diagnosis" + (f"_{args.tag}" if args.tag else "")
    write_json(out_dir / f"{stem}.json", {
        "machine": machine_info(), "config": cfg.to_dict(), "episode_length": env.episode_length,
        "actor_goals": args.actor_goals, "geometry": geometry, "curve": curve, "hindsight": hs,
        "pair_table": table, "critic": probe})
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot([r["env_steps"] for r in curve], [r["success_any"] for r in curve], "o-")
    ax[0].set(xlabel="env steps", ylabel="success_any (128 eval episodes)", ylim=(0, 1.02))
    ax2 = ax[0].twinx()
    ax2.plot([r["env_steps"] for r in curve], [r["connecting_episodes"] for r in curve], "r.--")
    ax2.set_ylabel("replay episodes joining the far ends", color="r")
    im = ax[1].imshow(np.asarray(table["success"]), vmin=0, vmax=1, cmap="viridis")
    labels = [str(tuple(map(int, c))) for c in free]
    ax[1].set(xticks=range(len(free)), yticks=range(len(free)), xticklabels=labels, yticklabels=labels,
              xlabel="goal cell", ylabel="start cell", title=f"success {table['overall']:.3f}")
    plt.setp(ax[1].get_xticklabels(), rotation=60)
    fig.colorbar(im, ax=ax[1])
    ax[2].bar(range(7), hs["corridor_distance_hist"])
    ax[2].set_yscale("log")
    ax[2].set(xlabel="corridor distance s -> hindsight g (cells)", ylabel="sampled pairs",
              title=f"far-end pairs: {hs['far_end_pairs']} of {hs['pairs']}")
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=90)
    print(f"wrote {out_dir / f'{stem}.png'}")


if __name__ == "__main__":
    main()
