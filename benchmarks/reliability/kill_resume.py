"""SIGKILL a teacher run and a distillation at random moments, resume each time, check the damage.

    python benchmarks/reliability/kill_resume.py [--kills 6] [--seed 0] [--processes 1]
        [--epochs 30] [--out benchmarks/results/kill_resume.json]

Teacher: `crl-distill teacher` (a small CPU config) is killed >= `--kills` times, some kills
aimed at the moment a checkpoint temp file appears (i.e. during the write). After each kill:
every checkpoint file must load (never half-written), and the newest checkpoint must cover every
epoch whose metrics line was written (at most the epoch in progress is lost). The finished run's
metrics.jsonl must equal, byte for byte, an uninterrupted run with the same seed.
Distillation: `crl-distill student` is killed the same way and must finish with the same
per-iteration history as an uninterrupted distillation.
With `--processes 2` the teacher runs as two local processes (`python -m crl_distill.launch`,
one CPU device each) and every kill takes down the launcher and both processes; its reference
is an uninterrupted two-process run, every replay share must read too, and the student part is
skipped (distillation is single-process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

TEACHER_ARGS = ["--env", "pointmaze_u", "--width", "64", "--num-envs", "32", "--unroll-length",
                "25", "--updates-per-iter", "10", "--iters-per-epoch", "4", "--epochs", "8",
                "--num-eval-envs", "32", "--batch-size", "64", "--seed", "0", "--no-progress"]
TEACHER_ARGS[TEACHER_ARGS.index("--epochs") + 1] = "30"  # long enough to be killed often
STUDENT_ARGS = ["--students", "1x32", "--iterations", "12", "--num-envs", "32",
                "--steps-per-iter", "25", "--sgd-steps", "1500", "--episodes", "32",
                "--no-progress"]
CLI = [sys.executable, "-m", "crl_distill.cli"]
PROCESSES = 1  # set by --processes


def command(args: list[str]) -> list[str]:
    """The CLI command; a teacher with several processes goes through the local launcher."""
    if PROCESSES == 1 or args[0] != "teacher":
        return CLI + args
    return [sys.executable, "-m", "crl_distill.launch", "-n", str(PROCESSES), "--", *CLI,
            "teacher", "--distributed", *args[1:]]


def launch(args: list[str]) -> subprocess.Popen:
    # A session of its own: killpg takes down the launcher and every process it started.
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(command(args), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def kill_at(proc: subprocess.Popen, watch_dir: Path, aim_at_write: bool, max_wait: float,
            rng: random.Random) -> str:
    """Kill during this launch's second checkpoint write, or at a random moment after this
    launch has written 1-3 checkpoints (kills keyed to progress, not to wall time, so they land
    mid-run on a fast or a loaded machine alike)."""
    deadline = time.time() + max_wait
    target = rng.randint(1, 3)
    delay = rng.uniform(0.0, 1.0)
    seen: set[str] = set()
    while time.time() < deadline and proc.poll() is None:
        if watch_dir.exists():
            names = {p.name for p in watch_dir.iterdir()}
            seen |= {n for n in names if n.endswith(".tmp")}
            if aim_at_write and len(seen) >= 2 and any(n.endswith(".tmp") for n in names):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "during a checkpoint write"
            if not aim_at_write and len(seen) >= target:
                time.sleep(delay)
                break
        time.sleep(0.0005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "at a random moment"
    return "finished before the kill"


def check_teacher_dir(run: Path) -> dict:
    from crl_distill.checkpoint import read_meta
    from crl_distill.fileio import read_jsonl
    from crl_distill.teacher.train import CHECKPOINT_FORMAT, load_teacher

    ckpts = sorted((run / "checkpoints").glob("epoch-*.npz")) if run.exists() else []
    for c in ckpts:  # every complete-named file must be whole
        read_meta(c, CHECKPOINT_FORMAT)
    replays = sorted((run / "checkpoints").glob("replay-*.npz")) if run.exists() else []
    for r in replays:
        read_meta(r, "crl-distill-teacher-replay")
    if ckpts:
        load_teacher(run)
    newest = int(read_meta(ckpts[-1], CHECKPOINT_FORMAT)["epoch"]) if ckpts else 0
    written = len(read_jsonl(run / "metrics.jsonl"))
    return {"checkpoints": len(ckpts), "replay_files": len(replays), "newest_epoch": newest,
            "metrics_lines": written,
            "lost_epochs_beyond_in_progress": max(0, written - newest)}


def run_teacher(work: Path, kills: int, rng: random.Random) -> dict:
    ref = work / "teacher-ref"
    subprocess.run(command(["teacher", *TEACHER_ARGS, "--out", str(ref)]), check=True,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.DEVNULL)
    run = work / "teacher-killed"
    events = []
    for i in range(3 * kills):
        if sum(e["when"] != "finished before the kill" for e in events) >= kills:
            break
        args = ["teacher", "--resume", str(run)] if (run / "config.json").exists() else \
            ["teacher", *TEACHER_ARGS, "--out", str(run)]
        how = kill_at(launch(args), run / "checkpoints", aim_at_write=i % 2 == 1,
                      max_wait=90.0 * PROCESSES, rng=rng)
        state = check_teacher_dir(run)
        events.append({"kill": i + 1, "when": how, **state})
        print(f"teacher kill {i + 1}: {how}; {state}", flush=True)
    final = subprocess.run(command(["teacher", "--resume", str(run)]), capture_output=True, text=True,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})
    same = (run / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {"events": events, "final_rc": final.returncode, "final_stderr": final.stderr[-500:],
            "epochs": [r["epoch"] for r in rows], "env_steps": [r["env_steps"] for r in rows],
            "metrics_identical_to_uninterrupted": same,
            "max_epochs_lost_per_kill": max(e["lost_epochs_beyond_in_progress"] for e in events)}


def run_student(work: Path, kills: int, rng: random.Random) -> dict:
    teacher = work / "teacher-ref"
    ref = work / "students-ref"
    subprocess.run(CLI + ["student", "--from", str(teacher), *STUDENT_ARGS, "--out", str(ref)],
                   check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                   stdout=subprocess.DEVNULL)
    out = work / "students-killed"
    events = []
    for i in range(3 * kills):
        if sum(e["when"] != "finished before the kill" for e in events) >= kills:
            break
        how = kill_at(launch(["student", "--from", str(teacher), *STUDENT_ARGS, "--out", str(out)]),
                      out / ".progress", aim_at_write=i % 2 == 1, max_wait=90.0,
                      rng=rng)
        progress = out / ".progress" / "student-1x32.npz"
        it = None
        if progress.exists():
            from crl_distill.checkpoint import read_meta

            it = read_meta(progress, "crl-distill-distill-progress")["iteration"]
        events.append({"kill": i + 1, "when": how, "progress_iteration": it})
        print(f"student kill {i + 1}: {how}; saved iteration {it}", flush=True)
    final = subprocess.run(CLI + ["student", "--from", str(teacher), *STUDENT_ARGS, "--out",
                                  str(out)], capture_output=True, text=True,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})
    hist = lambda d: [h["loss/action"] for h in json.loads(
        (d / "distill_report.json").read_text())["students"][0]["history"]]
    return {"events": events, "final_rc": final.returncode,
            "history_identical_to_uninterrupted": hist(out) == hist(ref)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=1, help="teacher processes (local launcher)")
    p.add_argument("--epochs", type=int, default=30, help="teacher epochs")
    p.add_argument("--out", default="benchmarks/results/kill_resume.json")
    args = p.parse_args()
    from _common import machine_info, write_json

    global PROCESSES
    PROCESSES = args.processes
    TEACHER_ARGS[TEACHER_ARGS.index("--epochs") + 1] = str(args.epochs)

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crl-kill-"))
    teacher = run_teacher(work, args.kills, rng)
    real = lambda r: sum(e["when"] != "finished before the kill" for e in r["events"])
    teacher["real_kills"] = real(teacher)
    teacher["processes"] = args.processes
    ok = (teacher["real_kills"] >= args.kills and teacher["final_rc"] == 0
          and teacher["metrics_identical_to_uninterrupted"]
          and teacher["max_epochs_lost_per_kill"] <= 1)
    student = None
    if args.processes == 1:
        student = run_student(work, args.kills, rng)
        student["real_kills"] = real(student)
        ok = ok and (student["real_kills"] >= args.kills and student["final_rc"] == 0
                     and student["history_identical_to_uninterrupted"])
    print(f"teacher ({args.processes} process(es)): metrics identical "
          f"{teacher['metrics_identical_to_uninterrupted']}, max epochs lost per kill "
          f"{teacher['max_epochs_lost_per_kill']}; student: history identical "
          f"{student and student['history_identical_to_uninterrupted']}; PASS={ok}")
    write_json(args.out, {"machine": machine_info(), "teacher": teacher, "student": student,
                          "pass": ok})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
