"""Run-directory locks (issue #25, item 7): one writer per teacher run, student set and export
directory; a second one exits 2 with one line naming the holder's pid; a killed holder's lock
never blocks; readers never need it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from crl_distill import dirlock
from crl_distill.cli import main
from crl_distill.distill import student_set
from crl_distill.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from crl_distill.errors import CrlDistillError
from crl_distill.export import exported
from crl_distill.launch import free_port
from crl_distill.teacher import run_dir

CLI = [sys.executable, "-m", "crl_distill"]
# The smallest teacher the CLI trains; the preset's prefill (200 steps x 8 envs) dominates.
TINY = ["--env", "pointmaze_u", "--depth", "4", "--width", "32", "--num-envs", "8",
        "--unroll-length", "10", "--batch-size", "32", "--updates-per-iter", "2",
        "--iters-per-epoch", "2", "--num-eval-envs", "8", "--no-progress", "--logger", "none"]
HOLDER = textwrap.dedent("""
    import sys, time
    from crl_distill.dirlock import DirLock
    DirLock(sys.argv[1], "test holder").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", **extra}


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)  # typer returns normally when standalone_mode ends cleanly
    cap = capsys.readouterr()
    return e.value.code or 0, [ln for ln in (cap.out + cap.err).splitlines() if ln.strip()]


def _epochs(run: Path) -> list[int]:
    return [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# The mechanism
# ----------------------------------------------------------------------------------------------


def test_held_lock_refuses_with_pid_and_a_killed_holders_lock_is_taken_again(tmp_path):
    lock = tmp_path / "d" / ".x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CrlDistillError) as e:
            dirlock.DirLock(lock, "teacher run").acquire()
        msg = str(e.value)
        assert "\n" not in msg and f"pid {holder.pid} on host " in msg and str(lock) in msg, msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The dead holder's file is still there, its record naming it; the kernel dropped the lock.
    assert dirlock.read_holder(lock)["pid"] == holder.pid
    with dirlock.DirLock(lock, "teacher run"):
        assert dirlock.read_holder(lock)["pid"] == os.getpid()
    assert not lock.exists() and lock.parent.is_dir()


def test_lock_released_on_exception_and_the_directories_it_made_removed(tmp_path):
    lock = tmp_path / "new" / "run" / ".x.lock"

    @dirlock.releases_locks
    def failing_writer():
        dirlock.hold(lock, "teacher run")
        with pytest.raises(CrlDistillError, match=f"pid {os.getpid()}"):
            dirlock.DirLock(lock, "teacher run").acquire()  # held here: a second one is refused
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        failing_writer()
    assert not (tmp_path / "new").exists()  # a writer that failed leaves no empty directory
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "data").write_text("x")
    with dirlock.DirLock(tmp_path / "kept" / ".x.lock", "teacher run"):
        pass
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["data"]
    with pytest.raises(RuntimeError, match="outside"):
        dirlock.hold(lock, "teacher run")


def test_nested_writers_release_their_own_locks(tmp_path):
    """The pipeline's shape: one caller running writers on different directories in turn."""
    a, b = tmp_path / "a" / ".x.lock", tmp_path / "a" / "b" / ".y.lock"

    @dirlock.releases_locks
    def inner():
        dirlock.hold(b, "export")
        assert a.exists() and b.exists()

    @dirlock.releases_locks
    def outer():
        dirlock.hold(a, "teacher run")
        inner()
        assert a.exists() and not b.exists()
        inner()  # the directory's lock is free again for the next writer

    outer()
    assert not a.exists()


def test_exclusive_under_contention(tmp_path, monkeypatch):
    """Releasing unlinks the file while others wait on its inode; they must not lock the
    unlinked file beside a newcomer locking the new one (two holders at once)."""
    monkeypatch.setattr(dirlock, "HOLDER_WAIT_S", 0.0)
    lock = tmp_path / ".x.lock"
    inside, held, overlaps = [0], [0], []
    count = threading.Lock()

    def worker():
        for _ in range(200):
            try:
                with dirlock.DirLock(lock, "test"):
                    with count:
                        inside[0] += 1
                        held[0] += 1
                        if inside[0] > 1:
                            overlaps.append(inside[0])
                    time.sleep(0.0002)
                    with count:
                        inside[0] -= 1
            except CrlDistillError:
                pass

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert held[0] > 50 and not overlaps, (held, overlaps)


# ----------------------------------------------------------------------------------------------
# Teacher runs
# ----------------------------------------------------------------------------------------------


def test_two_teachers_on_one_run_dir_one_trains_then_a_kill_and_resume(tmp_path):
    """Started together: one trains, the other exits 2 naming it; the run is the winner's
    alone (its seed, one metrics row per epoch). kill -9 of the winner mid-run leaves its lock
    file, and `--resume` locks it again and finishes the run."""
    run, epochs = tmp_path / "run", 8
    # The resume reuses the winner's compiled executables: most of a tiny run is compiling.
    env = _env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    procs = [subprocess.Popen(CLI + ["teacher", *TINY, "--epochs", str(epochs), "--seed", str(seed),
                                     "--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    try:
        deadline = time.time() + 300
        while all(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read().strip()
        assert loser.returncode == 2, err[-2000:]
        lock = run / run_dir.LOCK
        assert len(err.splitlines()) == 1 and err.startswith("error:"), err
        assert f"pid {winner.pid} on host " in err and str(lock) in err, err
        # Kill the winner once its first epoch is checkpointed, long before its last.
        while not (run / "checkpoints" / "epoch-000001.npz").exists() and time.time() < deadline:
            assert winner.poll() is None, winner.stderr.read()[-2000:]
            time.sleep(0.02)
        winner.send_signal(signal.SIGKILL)
        winner.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert winner.returncode == -signal.SIGKILL
    assert json.loads((run / "config.json").read_text())["teacher"]["seed"] == procs.index(winner) + 1
    done = _epochs(run)
    assert done == list(range(len(done))) and len(done) < epochs, done  # no interleaved rows
    assert dirlock.read_holder(lock)["pid"] == winner.pid  # left on disk by the killed holder
    res = subprocess.run(CLI + ["teacher", "--resume", str(run), "--no-progress", "--logger", "none"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _epochs(run) == list(range(epochs))
    assert not lock.exists()
    from crl_distill.teacher import load_teacher

    assert load_teacher(run).epoch == epochs


def test_the_emptiness_check_ignores_the_lock_file_and_a_refused_resume_leaves_nothing(
        tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / run_dir.LOCK).write_text('{"pid": 1, "host": "gone"}\n')  # a dead holder's file
    assert not run_dir.holds_files(run)
    (run / "x").write_text("")
    assert run_dir.holds_files(run)
    code, lines = _run(["teacher", *TINY, "--epochs", "1", "--out", str(run)], capsys)
    assert code == 2 and len(lines) == 1 and "not empty" in lines[0], lines
    missing = tmp_path / "nope"
    code, lines = _run(["teacher", "--resume", str(missing)], capsys)
    assert code == 2 and len(lines) == 1 and "not a teacher run directory" in lines[0], lines
    assert not missing.exists()  # the lock made the directory; releasing it removed it again


def test_distributed_run_locks_on_process_0_and_every_process_stops(tmp_path):
    """Process 0 alone takes the lock; when it is refused, both processes exit 2 at once
    (the other one learns it collectively instead of waiting at the next barrier)."""
    run = tmp_path / "run"
    env = {**_env(), ENV_COORDINATOR: f"127.0.0.1:{free_port()}", ENV_NUM_PROCESSES: "2"}
    with dirlock.DirLock(run / run_dir.LOCK, "teacher run"):
        procs = [subprocess.Popen(CLI + ["teacher", "--distributed", *TINY, "--epochs", "1",
                                         "--out", str(run)], env={**env, ENV_PROCESS_ID: str(i)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        errs = [p.communicate(timeout=300)[1].strip() for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 2, err[-2000:]
        assert len(err.splitlines()) == 1 and f"pid {os.getpid()} on host " in err, err
    assert not run.exists()


# ----------------------------------------------------------------------------------------------
# Student sets and exports; readers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A teacher run without training: converted reference weights."""
    from test_reference_import import write_reference_pickle

    from crl_distill.teacher.reference_import import import_reference

    root = tmp_path_factory.mktemp("lock")
    write_reference_pickle(root / "ref.pkl", 3, False)
    return import_reference(root / "ref.pkl", "pointmaze_u", root / "teacher", fmt="jaxgcrl")


def test_readers_do_not_take_the_teacher_lock(teacher_run):
    from crl_distill.teacher import load_teacher

    with dirlock.DirLock(teacher_run / run_dir.LOCK, "teacher run"):
        t = load_teacher(teacher_run)
        assert not run_dir.run_complete(teacher_run, t.config)
        assert run_dir.find_teacher_checkpoint(teacher_run).name == "epoch-000000.npz"


def test_second_student_into_the_same_output_is_refused(teacher_run, tmp_path, capsys):
    out = tmp_path / "students"
    with dirlock.DirLock(out / student_set.LOCK, "student distillation"):
        code, lines = _run(["student", "--from", str(teacher_run), "--out", str(out),
                            "--students", "1x16", "--no-progress", "--logger", "none"], capsys)
        assert code == 2 and len(lines) == 1, lines
        assert f"pid {os.getpid()} on host " in lines[0] and student_set.LOCK in lines[0], lines
        assert [p.name for p in out.iterdir()] == [student_set.LOCK]  # nothing written
        assert not student_set.is_student_set(out)


def test_second_export_into_the_same_output_is_refused(teacher_run, tmp_path, capsys):
    target = tmp_path / "out" / "t.onnx"
    with dirlock.DirLock(exported.lock_file(target), "export"):
        code, lines = _run(["export", "--from", str(teacher_run), "--out", str(target),
                            "--skip-gates"], capsys)
        assert code == 2 and len(lines) == 1, lines
        assert f"pid {os.getpid()} on host " in lines[0] and exported.LOCK in lines[0], lines
        assert [p.name for p in target.parent.iterdir()] == [exported.LOCK]
