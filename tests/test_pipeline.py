"""End-to-end `crl-distill pipeline` with a tiny budget: it must produce a gated ONNX file."""

import json
import sys

import pytest

from crl_distill.errors import CrlDistillError
from crl_distill.pipeline import pick_acting, robot_physics, robot_spec, run_pipeline
from crl_distill.runtime import OnnxPolicy
from crl_distill.teacher.acting import Acting

TINY_TEACHER = dict(width=64, num_envs=32, unroll_length=25, batch_size=64, updates_per_iter=10,
                    iters_per_epoch=4, epochs=2, num_eval_envs=32)
TINY_DISTILL = dict(iterations=2, num_envs=16, steps_per_iter=25, sgd_steps_per_iter=50)


def _count_loads(monkeypatch) -> dict[str, int]:
    """Spy on the teacher and student loaders wherever a crl_distill module holds them."""
    from crl_distill.student.model import load_student
    from crl_distill.teacher.train import load_teacher

    counts = {"teacher": 0, "student": 0}
    for kind, orig in (("teacher", load_teacher), ("student", load_student)):
        def spy(*args, _orig=orig, _kind=kind, **kwargs):
            counts[_kind] += 1
            return _orig(*args, **kwargs)

        for mod in list(sys.modules.values()):
            if (getattr(mod, "__name__", "").startswith("crl_distill")
                    and getattr(mod, orig.__name__, None) is orig):
                monkeypatch.setattr(mod, orig.__name__, spy)
    return counts


def test_pipeline_end_to_end_and_rerun_skips(tmp_path, monkeypatch):
    out = tmp_path / "pipe"
    loads = _count_loads(monkeypatch)
    res = run_pipeline(out=out, students="1x32,2x32", teacher_overrides=TINY_TEACHER,
                       distill_overrides=TINY_DISTILL, episodes=32, parity_episodes=32,
                       deep_depth=16, progress=False)
    s = res.summary
    # One load of each after its stage: the teacher for distillation and latency, the student
    # for the export, whose traced policy the latency stage reuses.
    assert loads == {"teacher": 1, "student": 1}
    for name in ("summary.md", "summary.png", "summary.json", "policy.onnx", "latency.json",
                 "export_report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] and report["gates"]["numeric"]["max_abs_diff"] <= 1e-5
    policy = OnnxPolicy(out / "policy.onnx")
    assert not policy.metadata["gates_skipped"]
    assert [r["name"] for r in s["students"]] == ["1x32", "2x32"]
    assert s["onnx"]["latency_p50_us"] > 0 and s["teacher"]["depth"] == 4
    md = (out / "summary.md").read_text()
    assert "teacher depth 4" in md and "(exported)" in md
    # The acting mode is the pick among the actor and best-of-16 on the same seeds, and the
    # students' teacher row is that mode's evaluation.
    acting = s["acting"]
    assert [c["mode"] for c in acting["candidates"]] == [Acting().name, Acting(16).name]
    best = acting["candidates"][pick_acting(acting["candidates"])]
    assert acting["mode"] == best["mode"] and f"**{best['mode']}**" in md
    assert s["teacher"]["success_any"] == best["success_any"]
    # ... and that acting is recorded in every artifact it shaped.
    chosen = Acting(best["samples"], best["noise_seed"]).to_dict()
    assert json.loads((out / "students" / "distill_report.json").read_text())["teacher"][
        "acting"] == chosen
    assert policy.metadata["teacher_acting"] == chosen
    # A rerun finds every stage's output valid and redoes nothing.
    mtime = (out / "policy.onnx").stat().st_mtime_ns
    again = run_pipeline(out=out, students="1x32,2x32", teacher_overrides=TINY_TEACHER,
                         distill_overrides=TINY_DISTILL, episodes=32, parity_episodes=32,
                         deep_depth=16, progress=False)
    assert (out / "policy.onnx").stat().st_mtime_ns == mtime
    assert again.summary["stage_seconds"]["teacher"] < s["stage_seconds"]["teacher"]
    # (JSON, because an undefined retention is NaN and NaN != NaN)
    assert json.dumps(again.summary["students"]) == json.dumps(s["students"])
    # A rerun asking for another teacher says so in one line and changes nothing ...
    import pytest

    from crl_distill.errors import CrlDistillError

    with pytest.raises(CrlDistillError, match=r"epochs=2 \(requested 3\)"):
        run_pipeline(out=out, students="1x32,2x32", teacher_overrides={**TINY_TEACHER, "epochs": 3},
                     distill_overrides=TINY_DISTILL, episodes=32, parity_episodes=32,
                     deep_depth=16, progress=False)
    assert (out / "policy.onnx").stat().st_mtime_ns == mtime
    # ... and latency measured on another export is measured again.
    lat = json.loads((out / "latency.json").read_text())
    assert lat["student_params_sha256"] == report["params_sha256"]
    (out / "latency.json").write_text(json.dumps({**lat, "student_params_sha256": "stale"}))
    run_pipeline(out=out, students="1x32,2x32", teacher_overrides=TINY_TEACHER,
                 distill_overrides=TINY_DISTILL, episodes=32, parity_episodes=32,
                 deep_depth=16, progress=False)
    assert json.loads((out / "latency.json").read_text())["student_params_sha256"] == \
        report["params_sha256"]


def test_the_critic_replaces_the_actor_only_when_no_worse_on_both_metrics():
    def ev(success, tag):
        return {"success_any": success, "time_at_goal": tag}

    actor = ev(0.50, 441.5)
    assert pick_acting([actor]) == 0
    # the arm's figures: reaches more often, holds less -> keep the actor
    assert pick_acting([actor, ev(0.531, 407.9)]) == 0
    assert pick_acting([actor, ev(0.49, 500.0)]) == 0
    assert pick_acting([actor, ev(0.50, 441.5)]) == 0  # a tie keeps the simpler policy
    # the point maze's: better on both -> the critic
    assert pick_acting([ev(0.859, 79.9), ev(0.867, 80.5)]) == 1
    assert pick_acting([actor, ev(0.50, 450.0), ev(0.60, 441.5), ev(0.40, 900.0)]) == 2


def test_robot_envs_get_the_physics_that_transfers_and_the_robot_spec():
    assert robot_physics("ant", "cpu") == "ant:backend=mjx,goal_dist=2"
    assert robot_physics("ant", "gpu") == "ant:backend=mjx"  # the paper's 10 m goals on GPU
    assert robot_physics("ant:goal_dist=5", "cpu") == "ant:backend=mjx,goal_dist=5"  # yours win
    assert robot_physics("reacher", "cpu") == "reacher:backend=mjx"
    assert robot_physics("pointmaze_u", "cpu") == "pointmaze_u"
    assert robot_spec("reacher", "auto") == "robot" and robot_spec("pointmaze_u", "auto") == ""
    assert robot_spec("reacher", "none") == "" and robot_spec("ant", "latency=0.02") == "latency=0.02"
    with pytest.raises(CrlDistillError, match="pointmaze_u has no native model"):
        robot_spec("pointmaze_u", "robot")
    with pytest.raises(CrlDistillError, match="not a preset"):
        robot_spec("reacher", "robt")
    with pytest.raises(CrlDistillError, match=r"\(0, 1\]"):
        run_pipeline(env="reacher", min_retention=0.0, progress=False)


@pytest.mark.slow
def test_a_robot_pipeline_distills_under_the_spec_and_gates_the_file(tmp_path):
    """The reacher pipeline trains MJX, distills under the spec and gates the export in
    native MuJoCo: a tiny teacher's students cannot keep 0.8 of it, so no file is written and
    the one line says why; with a floor they keep, the file and the robot rows appear."""
    out = tmp_path / "pipe"
    kw = dict(env="reacher", out=out, students="1x32", teacher_overrides=TINY_TEACHER,
              distill_overrides=TINY_DISTILL, episodes=8, parity_episodes=8, deep_depth=8,
              progress=False, act_samples=1, robust="latency=0.02,mass=0.9:1.1")
    try:
        res = run_pipeline(**kw, min_retention=1.0)
    except CrlDistillError as e:
        assert "below --min-retention 1" in str(e) and not (out / "policy.onnx").exists()
    else:  # the rare tiny teacher its student matches: then the file passed the gate
        assert res.summary["robust"]["passed"]
    try:
        res = run_pipeline(**kw, min_retention=1e-6)
    except CrlDistillError as e:  # a teacher that never held the goal: nothing to keep
        assert "the clean teacher's 0.0" in str(e) and not (out / "policy.onnx").exists()
        return
    s = res.summary
    assert s["env"] == "reacher:backend=mjx" and s["robust"]["passed"]
    assert s["robust"]["perturbation"]["obs_latency"] == 0.02
    assert set(s["native"]) == {"brax", "native", "ratio", "episodes"}
    md = (out / "summary.md").read_text()
    assert "Robustness gate, native MuJoCo under" in md and "Native MuJoCo, clean" in md
