"""Several seeds in one program: the training carry vmapped over seeds, one run directory each."""

import json
import subprocess
import sys

import numpy as np
import pytest

from crl_distill.errors import CrlDistillError
from crl_distill.teacher import TeacherConfig, load_teacher, train_seeds, train_teacher
from crl_distill.teacher.config import NetConfig
from crl_distill.teacher.run_dir import epoch_checkpoints, read_metrics, seed_run, seed_runs

TINY = TeacherConfig(env="pointmaze_u", actor=NetConfig(0, 32), critic=NetConfig(0, 32),
                     num_envs=8, unroll_length=10, batch_size=32, updates_per_iter=4,
                     iters_per_epoch=2, epochs=2, replay_capacity=60, prefill_steps=20,
                     num_eval_envs=16, alpha_learning_rate=3e-3)
#: metrics that are averages of float losses; vmapping reorders the float work inside them
FLOAT_KEYS = ("critic_loss", "actor_loss", "infonce", "entropy", "alpha", "q")


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "g"
    results = train_seeds(TINY, out, seeds=[3, 5], progress=False, logger="none")
    return out, results


def test_each_vmapped_seed_is_its_own_run_and_equals_a_single_run(group, tmp_path):
    out, results = group
    assert [r.run_dir for r in results] == [seed_run(out, 3), seed_run(out, 5)] == seed_runs(out)
    for r, seed in zip(results, (3, 5), strict=True):
        cfg = json.loads((r.run_dir / "config.json").read_text())["teacher"]
        assert cfg["seed"] == seed
        assert load_teacher(r.run_dir).config.seed == seed  # readable by every command
        assert (r.run_dir / "checkpoints" / "best.npz").is_file()
    alone = train_teacher(TeacherConfig(**{**TINY.__dict__, "seed": 5}), tmp_path / "alone",
                          progress=False, logger="none")
    got, want = read_metrics(results[1].run_dir), alone.metrics
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [0, 1]
    for a, b in zip(got, want, strict=True):
        assert a["env_steps"] == b["env_steps"] and a["sgd_steps"] == b["sgd_steps"]
        for k in FLOAT_KEYS:
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k
        # evaluation counts episodes: equal policies reach the goal in the same episodes
        assert a["eval/success_any"] == pytest.approx(b["eval/success_any"], abs=1 / 16 + 1e-9)
    # two seeds are two runs, not one copied
    assert read_metrics(results[0].run_dir)[-1]["critic_loss"] != got[-1]["critic_loss"]


def test_a_killed_group_resumes_from_the_epoch_every_seed_has(group, tmp_path):
    out, results = group
    import shutil

    copy = tmp_path / "g"
    shutil.copytree(out, copy)
    for lock in copy.glob("*/.teacher.lock"):
        lock.unlink()
    # As a kill between two seeds' checkpoint writes leaves it: seed 5 one epoch behind.
    newest = epoch_checkpoints(seed_run(copy, 5))[-1]
    newest.unlink()
    cfg = {**TINY.__dict__, "epochs": 3}
    for run in seed_runs(copy):  # ask for one more epoch, as a longer run would have
        info = json.loads((run / "config.json").read_text())
        info["teacher"]["epochs"] = cfg["epochs"]
        (run / "config.json").write_text(json.dumps(info))
    resumed = train_seeds(None, copy, resume=True, progress=False, logger="none")
    for r in resumed:
        assert [m["epoch"] for m in r.metrics] == [0, 1, 2]
        assert [m["epoch"] for m in read_metrics(r.run_dir)] == [0, 1, 2]


def test_bad_seed_lists_are_one_line(tmp_path):
    with pytest.raises(CrlDistillError, match="repeat"):
        train_seeds(TINY, tmp_path / "a", seeds=[1, 1], progress=False, logger="none")
    with pytest.raises(CrlDistillError, match="no seed-N"):
        train_seeds(None, tmp_path / "none", resume=True, progress=False, logger="none")
    for arg in ("a,b", ","):
        p = subprocess.run([sys.executable, "-m", "crl_distill", "teacher", "--seeds", arg,
                            "--out", str(tmp_path / "c"), "--no-progress"],
                           capture_output=True, text=True)
        assert p.returncode == 2 and "--seeds" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_seed_noise_differs_between_runs(group):
    _, results = group
    a, b = (load_teacher(r.run_dir) for r in results)
    obs = np.random.default_rng(0).uniform(0, 4, (8, 4)).astype(np.float32)
    assert not np.allclose(a.act(obs), b.act(obs))
