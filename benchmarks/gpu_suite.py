"""The GPU measurements for one borrowed GPU window: in priority order, inside a wall budget.

    python benchmarks/gpu_suite.py [--out benchmarks/results/gpu_suite.json] [--budget-s 520]
        [--only NAME,...] [--learn-env-steps N] [--retry] [--smoke]

A loan is one H200/H100 for 15 minutes of device time in all (its start, installs and every
retry included), one command at most 10 minutes, so the suite fits 9 minutes including every
compile (benchmarks/gpu/device_command.txt runs it there under `timeout`). Steps, in priority
order (each in a fresh subprocess, so its compile time and peak device memory are its own):

(a) throughput-ant-d4: the paper's settings (teacher/config.py: 512 envs, unroll 62, batch 256,
    800 SGD updates per iteration; 4 iterations per timed epoch instead of 32): compile seconds
    of init + epoch, env steps/s of whole epochs (collect + SGD), SGD steps/s of the SGD alone,
    peak device memory (`memory_stats()["peak_bytes_in_use"]`). Anchor: JaxGCRL trains 10 M
    env steps in ~10 min on one GPU (~17 k env steps/s).
(b) deep-ant-d64 / -d256 / -d1000: the same epoch with few SGD updates (its compile time is
    what training pays), SGD steps/s of the SGD alone, peak memory; bf16 from depth 64, remat
    from depth 256 (there they cut memory and time).
(c) learn-ant-d64, learn-ant-d4: train on `ant` (goals 10 m away, the paper's task) to the SAME
    env-step budget, chosen at run time so both fit the minutes left (from (a) and (b)'s rates;
    `--learn-env-steps` fixes it); one seed each, run one after the other (the codebase has no
    vmapped seeds yet). Final and best success_any / time at goal, and the eval curve.

Each step's planned device time is printed in a table before anything runs; a step whose plan no
longer fits the remaining budget is skipped (recorded, with the reason), and each child's
timeout is the budget left. The JSON is written after every step, and a step stopped by its
timeout or by SIGTERM (the device command's `timeout`) keeps what it measured so far (a child
writes its partial row after every phase; a learning run's epochs are in its metrics.jsonl).
A step whose result is already in --out is skipped, so a second window resumes.

--smoke runs the same code paths at tiny sizes on CPU (pointmaze_u, depths 4 and 8, bf16 and
remat at 8; the step names stay) in a few minutes; its numbers mean nothing, it checks the script.

The window, step by step (one device call; a second one rarely fits a 15-minute loan):
  1. here, in the checkout the device tool sends: `python benchmarks/gpu/wheelhouse.py` (the 9
     missing wheels into /.whl/, ~19 MiB; it checks them against the 64 MiB carry budget);
  2. here: `bash benchmarks/gpu/rehearse.sh` (the device command verbatim on CPU, in a venv with
     the image's packages only, smoke mode);
  3. device run: carry [".whl"], timeout_s 600, command = benchmarks/gpu/device_command.txt
     (installs ~20 s, then this suite under `timeout 540`, --budget-s 520); its $OUT returns
     gpu_suite.json, gpu_suite.png, suite.log, versions.txt;
  4. copy gpu_suite.json/.png into benchmarks/results/ and replace PLAN_S with the measured wall_s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

DEEP_DEPTHS = (64, 256, 1000)
#: SGD updates per timed epoch of the deep steps (b): small, so a depth-1000 epoch stays seconds
DEEP_UPDATES = {64: 100, 256: 25, 1000: 8, 8: 2}
#: SGD-only scan length (a, b): enough steps to time, few enough at depth 1000
SGD_ONLY_UPDATES = {4: 400, 64: 100, 256: 25, 1000: 8, 8: 4}
LEARN_DEPTHS = (64, 4)  # the slower first: if it overruns, the comparison is lost either way
#: iterations per epoch, (a) and (c) alike (126,976 env steps: an eval every ~10-40 s when
#: learning), so learn-ant-d4 finds (a)'s init and epoch in the persistent compilation cache
EPOCH_ITERS = 4
LEARN_MAX_EPOCHS = 40
#: planned device seconds per step (a, b), start of a python + jax + CUDA child included; from the
#: anchor and launch-bound estimates (no GPU measurement yet: replace after the first window)
PLAN_S = {"throughput-ant-d4": 100, "deep-ant-d64": 80, "deep-ant-d256": 90, "deep-ant-d1000": 100}
#: what a learning run costs besides its epochs: child start, init/epoch compile (when no
#: measurement of that depth), evaluate compile; and one evaluation (256 episodes) per epoch
LEARN_START_S, LEARN_COMPILE_S, EVAL_COMPILE_S, EVAL_S = 15.0, 60.0, 30.0, 8.0
#: env steps/s assumed when (a)/(b) left no measurement: the anchor, and a launch-bound guess
FALLBACK_RATE = {4: 17_000.0, 64: 3_000.0}
SMOKE = dict(env="pointmaze_u", num_envs=8, unroll_length=5, batch_size=8, updates_per_iter=2,
             iters_per_epoch=1,
             replay_capacity=20, prefill_steps=5, num_eval_envs=4, width=32)
#: 9 minutes less the device command's installs and margins (benchmarks/gpu/device_command.txt)
BUDGET_S = 520.0
#: a shared 2-core CPU compiles the smoke children slowly
SMOKE_BUDGET_S = 1500.0
SMOKE_PLAN_S = 40.0
SMOKE_LEARN_EPOCHS = 2
PARTIAL_ENV = "CRL_GPU_SUITE_PARTIAL"


def steps(smoke: bool) -> list[dict]:
    """Every step of the suite in priority order: name, kind and the child's arguments."""
    deep = (8,) if smoke else DEEP_DEPTHS
    out = [{"name": "throughput-ant-d4", "kind": "throughput", "depth": 4}]
    out += [{"name": f"deep-ant-d{d}", "kind": "deep", "depth": d} for d in deep]
    out += [{"name": f"learn-ant-d{d}", "kind": "learn", "depth": d}
            for d in ((8, 4) if smoke else LEARN_DEPTHS)]
    for s in out:
        d = s["depth"]
        s.update(env="ant", bf16=d >= 64, remat=d >= 256, smoke=smoke)
        if smoke:
            s.update(env="pointmaze_u", bf16=d >= 8, remat=d >= 8)
    return out


def _config(step: dict, **over: Any):
    """The TeacherConfig of a step: the GPU preset (the paper's settings) or the smoke sizes."""
    from crl_distill.teacher import configure

    sizes: dict[str, Any] = dict(SMOKE) if step["smoke"] else {}
    env, width = sizes.pop("env", step["env"]), sizes.pop("width", None)
    sizes.update(over)
    return configure(env, depth=step["depth"], width=width,
                     platform="cpu" if step["smoke"] else "gpu",
                     dtype="bfloat16" if step["bf16"] else "float32", remat=step["remat"], **sizes)


class _Partial:
    """A child's row so far, rewritten after every phase, so a killed child leaves it behind."""

    def __init__(self) -> None:
        self.row: dict[str, Any] = {}
        self.path = os.environ.get(PARTIAL_ENV)

    def note(self, **kw: Any) -> None:
        self.row.update(kw)
        if self.path:
            from crl_distill.fileio import atomic_write_json

            atomic_write_json(self.path, self.row)


def _peak_gib() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None


def sgd_only(crl: Any, updates: int):
    """carry -> (train state, last critic loss) after `updates` SGD steps on hindsight batches
    from the carry's replay: the SGD of an iteration without its collection, to time alone."""
    import jax

    from crl_distill.teacher.crl import sample_hindsight

    cfg = crl.cfg

    def run(carry):
        def update(ts, k):
            k_batch, k_actor = jax.random.split(k)
            batch = sample_hindsight(k_batch, carry.replay, cfg.batch_size, crl.env, cfg.discount)
            return crl.sgd_step(ts, {k: batch[k] for k in ("state", "action", "goal")}, k_actor)

        ts, m = jax.lax.scan(update, carry.train, jax.random.split(carry.key, updates))
        return ts, m["critic_loss"][-1]

    return run


def child_throughput(step: dict, part: _Partial) -> dict:
    """(a) and (b): compile init + epoch, time epochs, then time the SGD alone."""
    import jax

    from crl_distill.envs import make
    from crl_distill.teacher.crl import CRL, carry_shardings, make_mesh

    d = step["depth"]
    over: dict[str, Any] = {} if step["smoke"] else {"iters_per_epoch": EPOCH_ITERS}
    if step["kind"] == "deep":
        over.update(iters_per_epoch=1, updates_per_iter=DEEP_UPDATES[d])
    cfg = _config(step, **over)
    env = make(cfg.env)
    mesh = make_mesh()
    crl = CRL(cfg, env, mesh)
    key = jax.random.PRNGKey(0)
    shape = jax.eval_shape(crl.init, key)
    sh = carry_shardings(shape, mesh)
    part.note(device=str(jax.devices()[0]), updates_per_iter=cfg.updates_per_iter,
              iters_per_epoch=cfg.iters_per_epoch, num_envs=cfg.num_envs,
              unroll_length=cfg.unroll_length,
              jit_options=env.jit_options)
    t0 = time.perf_counter()
    init = jax.jit(crl.init, out_shardings=sh, compiler_options=env.jit_options).lower(key).compile()
    epoch = jax.jit(crl.epoch, donate_argnums=0, out_shardings=(sh, None),
                    compiler_options=env.jit_options).lower(shape).compile()
    part.note(compile_s=time.perf_counter() - t0)
    carry = init(key)
    carry, m = epoch(carry)  # first touch of memory, not timed
    jax.block_until_ready(m)
    reps = 1 if step["smoke"] or step["kind"] == "deep" else 2
    t0 = time.perf_counter()
    for _ in range(reps):
        carry, m = epoch(carry)
    jax.block_until_ready(m)
    epoch_s = (time.perf_counter() - t0) / reps
    sgd_per_epoch = cfg.updates_per_iter * cfg.iters_per_epoch
    part.note(epoch_s=epoch_s, env_steps_per_s=cfg.env_steps_per_epoch / epoch_s,
              epoch_sgd_steps_per_s=sgd_per_epoch / epoch_s, peak_device_gib=_peak_gib(),
              critic_loss=float(m["critic_loss"]))
    n = SGD_ONLY_UPDATES[d]
    t0 = time.perf_counter()
    sgd = jax.jit(sgd_only(crl, n), compiler_options=env.jit_options).lower(carry).compile()
    part.note(sgd_compile_s=time.perf_counter() - t0)
    jax.block_until_ready(sgd(carry))
    t0 = time.perf_counter()
    jax.block_until_ready(sgd(carry))
    sgd_s = time.perf_counter() - t0
    # one iteration's collection: epoch time less its SGD at the SGD-alone rate
    collect_s = max(epoch_s / cfg.iters_per_epoch - cfg.updates_per_iter * sgd_s / n, 0.0)
    part.note(sgd_steps_per_s=n / sgd_s, collect_s_per_iter=collect_s,
              peak_device_gib_with_sgd=_peak_gib())
    return part.row


def child_learn(step: dict, part: _Partial) -> dict:
    """(c): train to `env_steps` in run_dir (its metrics.jsonl survives a kill)."""
    from crl_distill.teacher import train_teacher

    over = {} if step["smoke"] else {"iters_per_epoch": EPOCH_ITERS}
    cfg = _config(step, total_env_steps=step["env_steps"], **over)
    curve: list[dict] = []

    def on_epoch(row: dict) -> None:
        curve.append({k: v for k, v in row.items() if k in ("epoch", "env_steps", "sgd_steps")
                      or k.startswith("eval/")})
        part.note(curve=curve, env_steps=row["env_steps"], wall_s_so_far=time.perf_counter() - t0)

    t0 = time.perf_counter()
    res = train_teacher(cfg, step["run_dir"], progress=False, logger="none", on_epoch=on_epoch)
    last = res.metrics[-1]
    part.note(seconds=time.perf_counter() - t0, epochs=cfg.epochs, env_steps=last["env_steps"],
              success_any=last["eval/success_any"], time_at_goal=last["eval/time_at_goal"],
              best_success_any=max(r["eval/success_any"] for r in res.metrics),
              peak_device_gib=_peak_gib())
    return part.row


def child(step: dict) -> dict:
    """Run one step in this process; returns its measurements."""
    part = _Partial()
    return (child_learn if step["kind"] == "learn" else child_throughput)(step, part)


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------
def training_rate(results: dict, depth: int, updates: int) -> float | None:
    """Predicted env steps/s of training at `depth` with `updates` SGD steps per iteration, from
    that depth's measured collection time and SGD-alone rate (None if not measured)."""
    for r in results.get("steps", {}).values():
        if r.get("step", {}).get("depth") == depth and r["step"]["kind"] != "learn" \
                and r.get("sgd_steps_per_s") and "collect_s_per_iter" in r and "error" not in r:
            iter_s = r["collect_s_per_iter"] + updates / r["sgd_steps_per_s"]
            return r["num_envs"] * r["unroll_length"] / iter_s
    return None


def plan_learning(results: dict, learn_steps: list[dict], remaining_s: float, smoke: bool,
                  fixed_env_steps: int | None = None) -> tuple[int, dict[str, float]] | str:
    """The shared env-step budget of the learning steps and each one's planned seconds, or the
    reason they do not fit. All run to the same env steps: prefill + n whole epochs, n the most
    that fits `remaining_s` for all of them together (at most LEARN_MAX_EPOCHS)."""
    cfgs = {s["name"]: _config(s, **({} if smoke else {"iters_per_epoch": EPOCH_ITERS}))
            for s in learn_steps}
    any_cfg = next(iter(cfgs.values()))
    prefill = any_cfg.prefill_steps * any_cfg.num_envs
    per_epoch = any_cfg.env_steps_per_epoch
    fixed, per = {}, {}
    for s in learn_steps:
        cfg = cfgs[s["name"]]
        measured = [r for r in results.get("steps", {}).values()
                    if r.get("step", {}).get("depth") == s["depth"] and "compile_s" in r
                    and r["step"]["kind"] != "learn"]
        compile_s = measured[0]["compile_s"] if measured else LEARN_COMPILE_S
        rate = training_rate(results, s["depth"], cfg.updates_per_iter)
        rate = rate or FALLBACK_RATE.get(s["depth"], FALLBACK_RATE[64])
        fixed[s["name"]] = LEARN_START_S + compile_s + EVAL_COMPILE_S
        per[s["name"]] = per_epoch / rate + EVAL_S
    if smoke:
        n = SMOKE_LEARN_EPOCHS
    elif fixed_env_steps is not None:
        n = max(math.ceil((fixed_env_steps - prefill) / per_epoch), 1)
    else:
        n = min(int((remaining_s - sum(fixed.values())) // sum(per.values())), LEARN_MAX_EPOCHS)
    plan = {k: fixed[k] + n * per[k] for k in fixed}
    if smoke:
        plan = {k: SMOKE_PLAN_S for k in plan}
    if n < 1 or sum(plan.values()) > remaining_s:
        return (f"learning needs {sum(fixed.values()) + sum(per.values()):.0f} s for one epoch "
                f"of each depth, {remaining_s:.0f} s left")
    return prefill + n * per_epoch, plan


# ----------------------------------------------------------------------------------------------
# The parent: plan table, budget, subprocesses, partial results
# ----------------------------------------------------------------------------------------------
class Stopped(Exception):
    """SIGTERM reached the suite (the device command's `timeout`)."""


def _on_sigterm(*_: Any) -> None:
    raise Stopped


def _fmt(row: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))


def run_step(step: dict, timeout_s: float, partial: Path) -> dict:
    """One child; its row, or its partial row plus the error if it failed or ran out of time.
    SIGTERM (Stopped) propagates: subprocess.run kills the child, the caller saves the partial."""
    partial.unlink(missing_ok=True)
    # One persistent compilation cache for all children: learn-ant-d4 reuses (a)'s compiles.
    env = {"JAX_COMPILATION_CACHE_DIR": str(partial.parent / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1", **os.environ,
           "TF_CPP_MIN_LOG_LEVEL": "3", PARTIAL_ENV: str(partial)}
    try:
        res = subprocess.run([sys.executable, __file__, "--child", json.dumps(step)],
                             capture_output=True, text=True, timeout=max(timeout_s, 1), env=env)
        if res.returncode == 0:
            return json.loads(res.stdout.strip().splitlines()[-1])
        err = res.stderr[-2000:] or f"exit code {res.returncode}"
    except subprocess.TimeoutExpired:
        err = f"timed out after {timeout_s:.0f} s (budget)"
    return read_partial(partial, err)


def read_partial(partial: Path, err: str) -> dict:
    """What a stopped or failed child measured before it stopped, with the reason."""
    row = json.loads(partial.read_text()) if partial.exists() else {}
    return {**row, "error": err, "partial": bool(row)}


def run_suite(out: Path, todo: list[dict], budget_s: float, retry: bool, smoke: bool,
              work_dir: Path, learn_env_steps: int | None = None) -> dict:
    """Run `todo` in order inside `budget_s` seconds; writes `out` after every step."""
    from crl_distill.fileio import atomic_write_json

    t_start = time.perf_counter()
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("steps", {})
    results["budget_s"] = budget_s
    done = {n for n, r in results["steps"].items()
            if "skipped" not in r and ("error" not in r or not retry)}
    plan = {s["name"]: (SMOKE_PLAN_S if smoke else PLAN_S.get(s["name"], 0.0)) for s in todo}
    learn = [s for s in todo if s["kind"] == "learn" and s["name"] not in done]
    # a learning step done in an earlier window fixes the env steps of the rest
    earlier = [r["step"]["env_steps"] for n, r in results["steps"].items()
               if n in done and r["step"]["kind"] == "learn"]
    learn_env_steps = earlier[0] if earlier else learn_env_steps
    print(f"{'step':<22} {'planned s':>9} {'cumulative':>10}   (budget {budget_s:.0f} s; learning "
          f"steps share what (a) and (b) leave)")
    cum = 0.0
    for s in todo:
        if s["kind"] != "learn":
            cum += plan[s["name"]] if s["name"] not in done else 0.0
            print(f"{s['name']:<22} {plan[s['name']]:>9.0f} {cum:>10.0f}"
                  + ("   done before" if s["name"] in done else ""))
    print(f"{'learn-*':<22} {'rest':>9} {budget_s:>10.0f}", flush=True)
    partial = work_dir / "partial.json"
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for step in todo:
            name = step["name"]
            if name in done:
                print(f"{name}: done before, skipped", flush=True)
                continue
            remaining = budget_s - (time.perf_counter() - t_start)
            if step["kind"] == "learn" and "env_steps" not in step:
                got = plan_learning(results, learn, remaining, smoke, learn_env_steps)
                if isinstance(got, str):
                    for s in learn:
                        results["steps"][s["name"]] = {"step": s, "skipped": got}
                    atomic_write_json(out, results)
                    print(f"learn-*: skipped: {got}", flush=True)
                    break
                env_steps, lplan = got
                for s in learn:
                    s.update(env_steps=env_steps, run_dir=str(work_dir / f"{s['name']}-run"))
                    plan[s["name"]] = lplan[s["name"]]
                print("learning plan: " + ", ".join(f"{k} {v:.0f} s" for k, v in lplan.items())
                      + f" to {env_steps} env steps each", flush=True)
            if plan[name] > remaining:
                why = f"planned {plan[name]:.0f} s > {remaining:.0f} s left"
                results["steps"][name] = {"step": step, "skipped": why}
                atomic_write_json(out, results)
                print(f"{name}: skipped, {why}", flush=True)
                continue
            print(f"{name}: planned {plan[name]:.0f} s, {remaining:.0f} s left ...", flush=True)
            t0 = time.perf_counter()
            # a learning run may overrun its plan by half before it costs the other one its turn
            limit = remaining if step["kind"] != "learn" or smoke else min(remaining, 1.5 * plan[name] + 30)
            try:
                row = run_step(step, limit, partial)
            except Stopped:
                row = read_partial(partial, "stopped by SIGTERM")
                row.update(step=step, planned_s=plan[name], wall_s=time.perf_counter() - t0)
                results["steps"][name] = row
                atomic_write_json(out, results)
                print(f"{name}: STOPPED (SIGTERM) {_fmt(row)}", flush=True)
                raise
            row.update(step=step, planned_s=plan[name], wall_s=time.perf_counter() - t0)
            results["steps"][name] = row
            atomic_write_json(out, results)  # after every step: a killed suite keeps what it has
            print(f"{name}: " + ("ERROR " + row["error"].strip().splitlines()[-1] + " | " if "error" in row
                                 else "") + _fmt(row), flush=True)
    finally:
        signal.signal(signal.SIGTERM, old)
        results["suite_wall_s"] = time.perf_counter() - t_start
        atomic_write_json(out, results)
    return results


def plot(results: dict, path: Path) -> Path:
    """Four panels: env steps/s and SGD steps/s against depth, compile s and peak GiB, learning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["steps"].values() if "skipped" not in r]
    tp = sorted((r for r in rows if r["step"]["kind"] != "learn"), key=lambda r: r["step"]["depth"])
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.6))
    for i, (key, title) in enumerate([("env_steps_per_s", "training env steps / s (epochs)"),
                                      ("sgd_steps_per_s", "SGD steps / s (SGD alone)")]):
        pts = [(r["step"]["depth"], r[key]) for r in tp if r.get(key)]
        ax[i].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{2 * i}")
        ax[i].set(xscale="log", yscale="log", title=title, xlabel="depth")
    for key, label, m, c in [("compile_s", "epoch compile s", "o", "C1"),
                             ("peak_device_gib", "peak GiB", "s", "C3")]:
        pts = [(r["step"]["depth"], r[key]) for r in tp if r.get(key)]
        ax[2].plot([p[0] for p in pts], [p[1] for p in pts], marker=m, color=c, label=label)
    ax[2].set(xscale="log", title="compile s, peak device GiB", xlabel="depth")
    ax[2].legend()
    for r in rows:
        if r["step"]["kind"] == "learn" and r.get("curve"):
            ax[3].plot([c["env_steps"] for c in r["curve"]],
                       [c.get("eval/success_any", 0) for c in r["curve"]], marker="o",
                       label=f"depth {r['step']['depth']}")
    ax[3].set(title=f"{tp[0]['step']['env'] if tp else 'ant'}: eval success_any", xlabel="env steps",
              ylim=(-0.02, 1.02))
    if ax[3].lines:
        ax[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/gpu_suite.json")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"wall seconds for the whole suite, compiles included (default {BUDGET_S:.0f}; "
                        f"--smoke: {SMOKE_BUDGET_S:.0f})")
    p.add_argument("--only", default=None, help="comma-separated step names")
    p.add_argument("--learn-env-steps", type=int, default=None,
                   help="fix the learning steps' env-step budget (default: what fits)")
    p.add_argument("--work-dir", default=None, help="learning run directories (default: a temp dir)")
    p.add_argument("--retry", action="store_true", help="rerun steps that failed before")
    p.add_argument("--smoke", action="store_true", help="tiny CPU sizes: checks the script")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(json.loads(a.child))))
        return
    todo = steps(a.smoke)
    if a.only:
        names = set(a.only.split(","))
        unknown = names - {s["name"] for s in todo}
        if unknown:
            print(f"error: unknown steps {sorted(unknown)}", file=sys.stderr)
            sys.exit(2)
        todo = [s for s in todo if s["name"] in names]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work_dir) if a.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            budget = a.budget_s if a.budget_s is not None else SMOKE_BUDGET_S if a.smoke else BUDGET_S
            results = run_suite(out, todo, budget, a.retry, a.smoke, work, a.learn_env_steps)
        except Stopped:
            results = json.loads(out.read_text())
            print(f"stopped by SIGTERM; wrote {out}; {plot(results, out.with_suffix('.png'))}")
            sys.exit(143)
    print(f"wrote {out}; {plot(results, out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
