"""The depth sweep: a resumable grid of vmapped-seed teachers and its aggregate."""

import json

import numpy as np
import pytest
from scipy import stats

from crl_distill.distill import DistillConfig
from crl_distill.errors import CrlDistillError
from crl_distill.sweep import run_sweep, seed_interval
from crl_distill.teacher.run_dir import read_metrics, seed_run

TINY = dict(num_envs=8, unroll_length=10, batch_size=32, updates_per_iter=4, iters_per_epoch=2,
            epochs=2, replay_capacity=60, prefill_steps=20, num_eval_envs=16)
DCFG = DistillConfig(iterations=1, num_envs=8, steps_per_iter=10, sgd_steps_per_iter=5,
                     eval_episodes=8)


def test_seed_interval_is_students_t():
    mean, half = seed_interval([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 0.2 / np.sqrt(3))
    assert np.isnan(seed_interval([0.4])[1])


def test_sweep_trains_every_cell_aggregates_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    s = run_sweep("pointmaze_u", [0, 4], [0, 1], out, widths=[16], progress=False,
                  teacher_overrides=TINY)
    assert [c["cell"] for c in s["cells"]] == ["d0-w16", "d4-w16"]
    for c in s["cells"]:
        per_seed = [read_metrics(seed_run(out / c["cell"], k))[-1]["eval/success_any"]
                    for k in (0, 1)]
        assert c["success_any_per_seed"] == per_seed
        assert c["success_any"] == pytest.approx(np.mean(per_seed))
        assert len(c["curve/success_any"]) == len(c["env_steps"]) == 2
    # equal budgets: every cell took the same SGD steps
    assert len({c["sgd_steps"] for c in s["cells"]}) == 1
    assert s["cells"][1]["params"] > s["cells"][0]["params"]
    for name in ("sweep.json", "sweep.md", "sweep_curves.png", "sweep_params.png"):
        assert (out / name).is_file(), name
    assert "| d4-w16 |" in (out / "sweep.md").read_text()
    # A rerun trains nothing again.
    metrics = seed_run(out / "d4-w16", 1) / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    again = run_sweep("pointmaze_u", [0, 4], [0, 1], out, widths=[16], progress=False,
                      teacher_overrides=TINY)
    assert metrics.stat().st_mtime_ns == before
    assert json.dumps(again["cells"][1]["curve/success_any"]) == json.dumps(
        s["cells"][1]["curve/success_any"])
    # Other settings over the same directory: one line naming them, nothing changed.
    with pytest.raises(CrlDistillError, match="other settings"):
        run_sweep("pointmaze_u", [0], [0, 1], out, widths=[16], progress=False,
                  teacher_overrides={**TINY, "epochs": 3})
    assert metrics.stat().st_mtime_ns == before


@pytest.mark.slow
def test_sweep_distills_each_cells_teachers(tmp_path):
    s = run_sweep("pointmaze_u", [0], [0, 1], tmp_path / "s", widths=[16], students="1x8",
                  distill_config=DCFG, progress=False, teacher_overrides=TINY)
    st = s["cells"][0]["students"]["1x8"]
    assert len(st["per_seed"]) == 2 and "success_any_ci95" in st
    assert st["success_any"] == pytest.approx(np.mean([p["success_any"] for p in st["per_seed"]]))
    assert "student 1x8" in (tmp_path / "s" / "sweep.md").read_text()


def test_bad_sweeps_are_one_line(tmp_path):
    with pytest.raises(CrlDistillError, match="environment|unknown"):
        run_sweep("nope", [4], [0], tmp_path / "a", progress=False)
    with pytest.raises(CrlDistillError, match="depth"):
        run_sweep("pointmaze_u", [3], [0], tmp_path / "b", progress=False)
    with pytest.raises(CrlDistillError, match="at least one"):
        run_sweep("pointmaze_u", [], [0], tmp_path / "c", progress=False)
    assert not any(tmp_path.iterdir())
