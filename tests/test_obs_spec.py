"""Student observation specs: a subset of the teacher's state plus past observations.

The layout is pinned by hand values; the JAX env wrapper (training, evaluation, export gates)
and the numpy stacker (onnxruntime on a robot or in native MuJoCo) must build the same inputs;
a reduced student distills, exports with its own layout in the file, and runs from it.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_distill.distill import DistillConfig, distill
from crl_distill.envs import make
from crl_distill.envs.base import auto_reset
from crl_distill.envs.observed import ObservedEnv, observed
from crl_distill.envs.perturbed import teacher_view
from crl_distill.errors import CrlDistillError
from crl_distill.obs_spec import ObsSpec, ObsStacker
from crl_distill.student import load_student


def test_parse_describe_and_sizes():
    spec = ObsSpec.parse("0:3,5", history=2)
    assert spec.state_indices == (0, 1, 2, 5) and spec.history == 2
    assert spec.kept_size(10) == 4 and spec.input_state_size(10) == 12
    assert spec.input_size(10, 3) == 15
    assert spec.describe(10) == "state[0:3,5] (4 of 10) + 2 past + goal"
    assert ObsSpec.parse(None).is_identity and ObsSpec.parse("all", 0).is_identity
    assert not ObsSpec.parse(None, 1).is_identity
    assert ObsSpec(**spec.to_dict()) == spec
    assert ObsSpec([1, 2]).state_indices == (1, 2)  # a list read back from JSON


@pytest.mark.parametrize("text,history,match", [
    ("3:1", 0, "bad student state"), ("a", 0, "bad student state"), ("0,0", 0, "distinct"),
    ("-1", 0, "bad student state"), ("0", 17, "history"), ("0", -1, "history"),
])
def test_bad_specs_are_one_line_errors(text, history, match):
    with pytest.raises(CrlDistillError, match=match):
        ObsSpec.parse(text, history)


def test_out_of_range_index_is_refused_against_the_env():
    with pytest.raises(CrlDistillError, match="out of range"):
        ObservedEnv(make("pointmaze_u"), ObsSpec((0, 2)))  # pointmaze state has 2 elements


def test_history_layout_by_hand():
    spec = ObsSpec((1,), history=2)
    stack = ObsStacker(spec, state_size=2)
    g = [9.0, 8.0]
    rows = [np.array([[10.0 * t, t, *g]]) for t in (1, 2, 3)]
    got = [stack(r)[0].tolist() for r in rows]
    # [s_t[1], s_t-1[1], s_t-2[1], goal]; an episode's first step repeats its first state.
    assert got == [[1, 1, 1, 9, 8], [2, 1, 1, 9, 8], [3, 2, 1, 9, 8]]
    stack.reset()
    assert stack(rows[2])[0].tolist() == [3, 3, 3, 9, 8]


def test_jax_wrapper_and_host_stacker_build_the_same_inputs_across_resets():
    inner = make("pointmaze_u")
    inner.episode_length = 7  # several auto-resets in 20 steps
    spec = ObsSpec((1, 0), history=3)
    env = observed(inner, spec)
    assert env.observation_size == 4 * 2 + 2 and env.state_size == 8
    n = 4
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    step = jax.jit(jax.vmap(env.step))
    reset = jax.jit(jax.vmap(lambda s, k: auto_reset(env, s, k)))
    stack = ObsStacker(spec, inner.state_size)
    for t in range(20):
        full = np.asarray(teacher_view(env, state))
        np.testing.assert_allclose(stack(full), np.asarray(state.obs), atol=0, rtol=0)
        action = jax.random.uniform(jax.random.PRNGKey(t), (n, 2), minval=-1.0)
        state = step(state, action)
        done = np.asarray(state.done) > 0
        state = reset(state, jax.random.split(jax.random.PRNGKey(100 + t), n))
        if done.any():
            stack.reset(np.flatnonzero(done))
    assert t == 19


def test_observed_sizes_each_mean_one_thing():
    inner = make("arm_reach")  # 13 state elements, goal_indices 7:10; nothing is built here
    env = ObservedEnv(inner, ObsSpec((9, 8, 7, 0), history=3))
    assert (env.teacher_state_size, env.kept_size, env.history_size) == (13, 4, 12)
    # state_size: the state part of the observation the policy gets (now + 3 past steps)
    assert env.state_size == 16 and env.observation_size == 16 + 3 == env.describe()["observation_size"]
    assert env.describe()["teacher_state_size"] == 13
    assert env.goal_indices == inner.goal_indices  # indices into the teacher's state


def test_observed_achieved_goal_reads_the_kept_goal_elements():
    inner = make("pointmaze_u")  # state = x, y; goal_indices (0, 1)
    env = ObservedEnv(inner, ObsSpec((1, 0), history=2))  # kept in reverse order
    n = 3
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    step = jax.jit(jax.vmap(env.step))
    for t in range(3):  # past steps differ from the current one after moving
        state = step(state, jax.random.uniform(jax.random.PRNGKey(t), (n, 2), minval=-1.0))
    got = jax.jit(env.achieved_goal)(state.obs[:, : env.state_size])
    want = inner.achieved_goal(teacher_view(env, state)[:, : inner.state_size])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(got), np.asarray(state.obs[:, 2:4]))  # not the past step
    np.testing.assert_allclose(np.asarray(env.goal_distance(got, state.goal)),
                               np.asarray(state.metrics["dist"]), atol=1e-6)
    # A student that does not see x holds no achieved goal: one clear error, at the call.
    blind = ObservedEnv(inner, ObsSpec((1,), history=1))
    with pytest.raises(CrlDistillError, match=r"does not keep teacher state element\(s\) \[0\]"):
        blind.achieved_goal(jnp.zeros(blind.state_size))


@pytest.fixture(scope="module")
def reduced_students(tmp_path_factory):
    """A fixed teacher on pointmaze_u distilled into a student that sees only x, plus 1 past x."""
    teacher = helpers.fixed_teacher()
    out = tmp_path_factory.mktemp("reduced") / "students"
    cfg = DistillConfig(iterations=2, num_envs=16, steps_per_iter=25, sgd_steps_per_iter=40,
                        batch_size=64, eval_episodes=16)
    return distill(teacher, students="1x16", out=out, config=cfg, progress=False,
                   obs=ObsSpec((0,), history=1))


def test_reduced_student_records_its_spec_and_acts_on_its_own_input(reduced_students):
    s = load_student(reduced_students.student_paths["1x16"])
    assert s.config.obs_spec == ObsSpec((0,), 1)
    facts = s.meta["env_facts"]
    assert facts["observation_size"] == 2 * 1 + 2 and facts["teacher_state_size"] == 2
    assert s.act(jnp.zeros((3, 4))).shape == (3, 2)
    row = reduced_students.report["students"][0]
    assert row["observation"].startswith("student input = state[0] (1 of 2) + 1 past + goal")


def test_reduced_student_exports_and_runs_from_the_file(reduced_students, tmp_path):
    from crl_distill.artifacts import load_artifact
    from crl_distill.evaluation import evaluate_artifact
    from crl_distill.export import export
    from crl_distill.runtime import OnnxPolicy

    res = export(reduced_students.student_paths["1x16"], out=tmp_path / "p.onnx", episodes=16)
    assert res.report["passed"]
    policy = OnnxPolicy(res.path)
    assert policy.metadata["observation_spec"] == {"state_indices": [0], "history": 1,
                                                   "teacher_state_size": 2}
    assert (policy.input_size, policy.observation_size, policy.state_size) == (4, 3, 1)
    assert policy.metadata["observation_names"] == "x,x@t-1,goal_x,goal_y"
    from crl_distill.runtime import verify

    assert verify(res.path)["weights"] == "match"  # the contract check holds for this variant
    # The runtime stacks history itself: the robot passes its current [x, goal] only.
    x = np.array([[0.5, 1.0, 2.0]], np.float32)
    first = policy.act(x)
    raw = policy.session.run(None, {"obs": np.array([[0.5, 0.5, 1.0, 2.0]], np.float32)})[0]
    np.testing.assert_allclose(first, np.clip(raw, -1, 1), atol=1e-6)
    second = policy.act(np.array([[0.7, 1.0, 2.0]], np.float32))
    raw = policy.session.run(None, {"obs": np.array([[0.7, 0.5, 1.0, 2.0]], np.float32)})[0]
    np.testing.assert_allclose(second, np.clip(raw, -1, 1), atol=1e-6)
    # From the env's full observation, the file reproduces the JAX student's evaluation.
    onnx = evaluate_artifact(load_artifact(res.path), episodes=16)
    jax_eval = evaluate_artifact(load_artifact(reduced_students.student_paths["1x16"]),
                                 episodes=16)
    assert abs(onnx["success_any"] - jax_eval["success_any"]) <= 1 / 16
    assert abs(onnx["time_at_goal"] - jax_eval["time_at_goal"]) <= 0.05 * max(1.0, jax_eval["time_at_goal"])


def test_a_spec_the_teacher_cannot_feed_writes_nothing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(CrlDistillError, match="out of range"):
        distill(helpers.fixed_teacher(), students="1x16", out=out, progress=False,
                obs=ObsSpec((5,)))
    assert not out.exists()


def test_input_range_monitor_counts_and_optionally_clamps(reduced_students, tmp_path):
    from crl_distill.export import export
    from crl_distill.runtime import OnnxPolicy

    res = export(reduced_students.student_paths["1x16"], out=tmp_path / "p.onnx", skip_gates=True)
    policy = OnnxPolicy(res.path)
    low = np.asarray(policy.metadata["obs_range"]["low"], np.float32)
    high = np.asarray(policy.metadata["obs_range"]["high"], np.float32)
    assert low.shape == (4,) and np.all(low <= high)
    inside = (low + high) / 2
    policy.act(np.concatenate([inside[:1], inside[2:]]))  # [x now, goal]; history fills itself
    assert policy.out_of_range == 0
    far = np.array([high[0] + 100.0, *inside[2:]], np.float32)
    policy.reset()
    counted = policy.act(far)  # counted, not refused
    assert policy.out_of_range == 1 and policy.out_of_range_per_element.tolist()[:2] == [1, 1]
    clamped = OnnxPolicy(res.path, clamp_to_range=True)
    stacked = np.array([[far[0], far[0], *far[1:]]], np.float32)  # a fresh history repeats
    want = clamped.session.run(None, {"obs": np.clip(stacked, low, high)})[0][0]
    np.testing.assert_allclose(clamped.act(far), np.clip(want, -1, 1), atol=1e-6)
    assert clamped.out_of_range == 1 and np.all(np.isfinite(counted))
