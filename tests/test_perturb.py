"""The perturbation spec (`crl_distill.perturb`), its JAX env (`envs.perturbed`) and native
MuJoCo under it (`crl_distill.native`): one meaning in both simulators."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from crl_distill.envs import make
from crl_distill.envs.perturbed import clean_obs, model_sizes, perturbed
from crl_distill.errors import CrlDistillError
from crl_distill.native import NativeSim
from crl_distill.perturb import (
    NONE,
    PRESETS,
    Perturbation,
    Schedule,
    draw_factors,
    kick_plan,
    kick_velocity,
    parse_perturbation,
)


def test_spec_strings_presets_and_records():
    assert parse_perturbation(None) == NONE and parse_perturbation("none").is_none
    robot = parse_perturbation("robot")
    assert robot == PRESETS["robot"] and robot.randomizes_model and not robot.is_none
    p = parse_perturbation("latency=0.02,obs_noise=1.0,mass=0.8:1.2")
    assert (p.obs_latency, p.action_latency, p.obs_noise, p.mass) == (0.02, 0.02, 1.0, (0.8, 1.2))
    assert p.describe() == "obs_noise=1,obs_latency=0.02,action_latency=0.02,mass=0.8:1.2"
    assert parse_perturbation(p.describe()) == p
    q = parse_perturbation("robot,mass=0.5:1.5")
    assert q.mass == (0.5, 1.5) and q.gain == PRESETS["robot"].gain and q.preset == ""
    assert Perturbation.from_dict(q.to_dict()) == q
    assert parse_perturbation("friction=0.7").friction == (0.7, 0.7)
    legged = parse_perturbation("legged")
    assert legged.push == 3.0 and legged.push_interval == (1.0, 3.0) and legged.mass == robot.mass
    assert "push_duration" not in robot.describe() and "push=3" in legged.describe()
    assert parse_perturbation(legged.describe()) == dataclasses.replace(legged, preset="")
    assert parse_perturbation("push_interval=2:4").is_none  # no kicks: nothing perturbed


def test_kick_plans_follow_waits_durations_and_sizes():
    spec = Perturbation(push=2.0, push_duration=(0.05, 0.05), push_interval=(1.0, 1.0))
    u = np.array([[0.3, 0.9, 1.0, 0.25], [0.7, 0.1, 0.5, 0.0]])
    plan = kick_plan(spec, 0.01, u)
    # 100 substeps of wait, 5 of kick; the next waits 100 more after the first ends
    np.testing.assert_allclose(plan[:, :2], [[100, 5], [205, 5]])
    np.testing.assert_allclose(plan[0, 2:] * 5, [0.0, 2.0], atol=1e-12)  # 2 m/s toward +y
    np.testing.assert_allclose(plan[1, 2:] * 5, [1.0, 0.0])
    total = sum(kick_velocity(plan, t) for t in range(300))
    np.testing.assert_allclose(total, [1.0, 2.0])
    assert not kick_velocity(plan, 99).any() and not kick_velocity(plan, 105).any()


@pytest.mark.parametrize(("text", "says"), [
    ("robt", "not a preset"), ("mass=2:1", "0 < lo <= hi"), ("latency=-1", ">= 0"),
    ("color=3", "unknown field 'color'"), ("mass=heavy", "not a number or lo:hi"),
    ("obs_noise=1,robot", "not a preset"), ("push=-1", ">= 0"),
    ("push=1,push_interval=0:2", "0 < lo <= hi"),
])
def test_bad_specs_are_one_line(text, says):
    with pytest.raises(CrlDistillError, match=says) as e:
        parse_perturbation(text)
    assert "\n" not in str(e.value)


def test_schedule_splits_each_control_step_at_the_substep():
    # 8 substeps; the command arrives 3 substeps late: 3 on the previous command, 5 on this one
    assert Schedule(8, 3, 0).segments() == [(3, 1, False), (5, 0, True)]
    # more than a control period late (11 substeps): the commands of 2 and 1 steps ago
    s = Schedule(8, 11, 0)
    assert s.action_slots == 3 and s.segments() == [(3, 2, False), (5, 1, True)]
    # a reading 10 substeps old: taken 2 substeps before the end of the previous step
    o = Schedule(8, 0, 10)
    assert (o.read_after, o.obs_lag) == (6, 1) and o.segments() == [(6, 0, True), (2, 0, False)]
    assert Schedule(8, 0, 0).segments() == [(8, 0, True)]
    assert Schedule.of(Perturbation(action_latency=0.02), 0.005, 8).action_delay == 4


def _run(env, actions, key=0):
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(key), actions.shape[1]))
    step = jax.jit(jax.vmap(env.step), compiler_options=env.jit_options)
    seen = [np.asarray(state.obs)]
    clean = [np.asarray(clean_obs(env, state))]
    for a in actions:
        state = step(state, jnp.asarray(a))
        seen.append(np.asarray(state.obs))
        clean.append(np.asarray(clean_obs(env, state)))
    return np.stack(seen), np.stack(clean)


def test_a_whole_period_of_latency_shifts_the_trajectory_by_one_step():
    """Action latency of one control period: the robot moves as the plain env driven by
    (0, a0, a1, ...); observation latency of one period: the policy sees the previous state."""
    env = make("reacher")
    period = env.control_period
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (12, 3, env.action_size)).astype(np.float32)
    shifted = np.concatenate([np.zeros_like(actions[:1]), actions[:-1]])
    plain_seen, _ = _run(env, shifted)
    late_seen, late_clean = _run(perturbed(env, Perturbation(action_latency=period)), actions)
    np.testing.assert_allclose(late_clean, plain_seen, atol=1e-5)
    np.testing.assert_allclose(late_seen, late_clean)  # no observation delay: sees the truth
    stale_seen, stale_clean = _run(perturbed(env, Perturbation(obs_latency=period)), actions)
    plain, _ = _run(env, actions)
    np.testing.assert_allclose(stale_clean, plain, atol=1e-5)
    np.testing.assert_allclose(stale_seen[1:], stale_clean[:-1], atol=1e-6)
    np.testing.assert_allclose(stale_seen[0], stale_clean[0])  # before the episode: its start


def test_jax_and_native_draw_the_same_model_and_noise_distributions():
    spec = PRESETS["robot"]
    env = perturbed(make("reacher:backend=mjx"), spec)
    sizes = model_sizes(env.inner)
    jax_draws = jax.vmap(env.draw_factors)(jax.random.split(jax.random.PRNGKey(1), 1024))
    rng = np.random.default_rng(1)
    np_draws = [draw_factors(spec, sizes, rng) for _ in range(1024)]
    assert set(jax_draws) == {"mass", "friction", "gain", "damping"}
    for name, per_episode in jax_draws.items():
        ours = np.stack([d[name] for d in np_draws])
        assert per_episode.shape == ours.shape, name
        lo, hi = getattr(spec, name)
        assert per_episode.min() >= lo and per_episode.max() <= hi, name
        for col in range(ours.shape[1]):
            assert stats.ks_2samp(np.asarray(per_episode[:, col]), ours[:, col]).pvalue > 1e-3, name
    # sensor noise: the JAX env's and the native sim's around the same clean state (the spring
    # reacher: noise needs no MuJoCo model, and it compiles in a fraction of MJX's time)
    noisy = perturbed(make("reacher"), Perturbation(obs_noise=1.0))
    state = jax.jit(jax.vmap(noisy.reset))(jax.random.split(jax.random.PRNGKey(2), 1024))
    jax_noise = np.asarray(state.obs - clean_obs(noisy, state))[:, : noisy.state_size]
    sim = NativeSim(noisy.native_spec(), 1024, perturb=Perturbation(obs_noise=1.0), seed=2)
    sim.set_state(np.asarray(state.sim.inner.sim.q), np.asarray(state.sim.inner.sim.qd))
    native_noise = sim.observation() - sim.state()
    for col in range(noisy.state_size):
        assert stats.ks_2samp(jax_noise[:, col], native_noise[:, col]).pvalue > 1e-3, col
    assert np.abs(jax_noise[:, 7:]).max() > 0.05  # m/s elements: +-0.1


def test_mjx_and_native_mujoco_agree_under_one_model_draw_and_latencies():
    """A fixed model draw, latencies that are no whole number of substeps or periods, no
    noise: the same action sequence gives the same trajectory (true and seen) in MJX and
    MuJoCo's C engine within the sim-to-sim tolerance (tests/test_native.py: 1e-3)."""
    spec = Perturbation(obs_latency=0.047, action_latency=0.013, mass=(0.7, 1.3),
                        friction=(0.5, 1.5), gain=(0.6, 1.4), damping=(0.5, 2.0))
    env = perturbed(make("reacher:backend=mjx"), spec)
    n = 3
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    factors = jax.vmap(env.draw_factors)(jax.random.split(jax.random.PRNGKey(5), n))
    state = jax.jit(jax.vmap(env.reset_with))(keys, factors)
    sim = NativeSim(env.native_spec(), n, perturb=spec)
    per_env = [{k: np.asarray(v[i], np.float64) for k, v in factors.items()} for i in range(n)]
    sim.set_state(np.asarray(state.sim.inner.sim.q), np.asarray(state.sim.inner.sim.qd), per_env)
    assert not np.allclose(sim.models[0].body_mass, sim.models[1].body_mass)
    step = jax.jit(jax.vmap(env.step), compiler_options=env.jit_options)
    q0, qd0 = np.asarray(state.sim.inner.sim.q), np.asarray(state.sim.inner.sim.qd)
    actions = np.random.default_rng(0).uniform(-1, 1, (40, n, env.action_size)).astype(np.float32)
    worst = 0.0
    for a in actions:
        state = step(state, jnp.asarray(a))
        sim.step(a)
        worst = max(worst, np.abs(sim.state() - np.asarray(clean_obs(env, state))[:, :10]).max(),
                    np.abs(sim.observation() - np.asarray(state.obs)[:, :10]).max())
    assert worst < 1e-3, worst
    # the draw mattered: the nominal model under the same latencies goes elsewhere
    plain = NativeSim(env.native_spec(), n, perturb=Perturbation(obs_latency=0.047,
                                                                  action_latency=0.013))
    plain.set_state(q0, qd0)
    for a in actions:
        plain.step(a)
    assert plain.models[0] is plain.model
    assert np.abs(plain.state() - sim.state()).max() > 1e-2


def test_pushes_are_the_same_kicks_in_mjx_and_native_mujoco():
    """The ant under velocity kicks: JAX and native draw the same kick distribution, and one
    fixed draw gives the same trajectory in both within the sim-to-sim tolerance over 20 steps
    (test_native: the ant's contacts part the engines after that); the kicks moved it."""
    spec = Perturbation(push=2.0, push_interval=(0.1, 0.3))
    env = perturbed(make("ant:backend=mjx"), spec)
    draws = jax.vmap(env.draw_factors)(jax.random.split(jax.random.PRNGKey(1), 1024))
    sim = NativeSim(env.native_spec(), 2, perturb=spec, seed=1)
    ours = np.stack([sim._draw()["kicks"] for _ in range(1024)])
    assert draws["kicks"].shape == ours.shape
    for col in range(4):
        assert stats.ks_2samp(np.asarray(draws["kicks"][:, 0, col]), ours[:, 0, col]).pvalue > 1e-3
    n, keys = 2, jax.random.split(jax.random.PRNGKey(0), 2)
    factors = jax.tree_util.tree_map(lambda a: a[:n], draws)
    state = jax.jit(jax.vmap(env.reset_with))(keys, factors)
    q0, qd0 = np.asarray(state.sim.inner.sim.q), np.asarray(state.sim.inner.sim.qd)
    sim.set_state(q0, qd0, [{"kicks": np.asarray(factors["kicks"][i], np.float64)} for i in range(n)])
    step = jax.jit(jax.vmap(env.step), compiler_options=env.jit_options)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, n, env.action_size)).astype(np.float32)
    worst = 0.0
    for a in actions:
        state = step(state, jnp.asarray(a))
        sim.step(a)
        worst = max(worst, np.abs(sim.state() - np.asarray(clean_obs(env, state))[:, :29]).max())
    assert worst < 1e-3, worst
    plain = NativeSim(env.native_spec(), n)
    plain.set_state(q0, qd0)
    for a in actions:
        plain.step(a)
    assert np.abs(plain.state() - sim.state()).max() > 1e-2


@pytest.mark.parametrize("name", ["reacher:backend=mjx", "ant:backend=mjx"])
def test_native_draws_as_many_factors_as_the_fused_jax_model_has(name):
    """brax fuses jointless bodies into their parents; native MuJoCo keeps them and gives each
    its parent's mass factor, so both draw the same factors and scale the same masses."""
    env = make(name)
    sim = NativeSim(env.native_spec(), 1, perturb=Perturbation(mass=(0.5, 0.5)))
    assert sim.sizes == model_sizes(env)
    sim.set_state(sim.model.qpos0[None], np.zeros((1, sim.model.nv)))
    np.testing.assert_allclose(sim.models[0].body_mass.sum(), 0.5 * sim.model.body_mass.sum())
    fused = perturbed(env, Perturbation(mass=(0.5, 0.5)))
    np.testing.assert_allclose(float(fused.model(fused.draw_factors(jax.random.PRNGKey(0))).body_mass.sum()),
                               0.5 * sim.model.body_mass.sum(), rtol=1e-5)


def test_perturbations_are_refused_where_they_mean_nothing():
    with pytest.raises(CrlDistillError, match="no physics substeps"):
        perturbed(make("pointmaze_u"), PRESETS["mild"])
    with pytest.raises(CrlDistillError, match="use backend=mjx"):
        perturbed(make("reacher"), PRESETS["robot"])
    assert perturbed(make("reacher"), PRESETS["none"]).name == "reacher"
    with pytest.raises(CrlDistillError, match="no free base to push"):
        perturbed(make("reacher:backend=mjx"), PRESETS["legged"])
    with pytest.raises(CrlDistillError, match="no free base to push"):
        NativeSim(make("reacher").native_spec(), 1, perturb=Perturbation(push=1.0))
    with pytest.raises(CrlDistillError, match="use backend=mjx"):
        perturbed(make("ant"), Perturbation(push=1.0))
    perturbed(make("reacher"), Perturbation(obs_noise=1.0, obs_latency=0.02))  # no model: fine


def test_distillation_under_a_perturbation_labels_from_the_clean_state(tmp_path):
    """DAgger in the perturbed robot: the student's rows hold what it senses (noisy, late), the
    teacher's labels are its actions on the clean state; the spec is in the report row."""
    from helpers import fixed_teacher

    from crl_distill.distill import DistillConfig
    from crl_distill.distill.dagger import Distiller
    from crl_distill.student.model import StudentConfig

    teacher = fixed_teacher(env="reacher")

    def labels_vs_actor_on_rows(perturb: str) -> float:
        dcfg = DistillConfig(iterations=1, num_envs=4, steps_per_iter=6, sgd_steps_per_iter=3,
                             eval_episodes=2, perturb=perturb)
        d = Distiller(teacher, StudentConfig(depth=1, width=16), dcfg)
        st = d.init(jax.random.PRNGKey(0))
        _, rows, _, _ = d.rollout(teacher.params, st.params, st.env_state, jax.random.PRNGKey(1),
                                  jnp.float32(1.0), 6)
        mean, _ = teacher.crl.actor.apply(teacher.params["actor"], rows["obs"])
        return float(np.abs(np.asarray(mean) - np.asarray(rows["t_mean"])).max())

    assert labels_vs_actor_on_rows("") < 1e-5  # clean: the student sees what the teacher sees
    assert labels_vs_actor_on_rows("obs_noise=2,obs_latency=0.04") > 1e-3
    with pytest.raises(CrlDistillError, match="not a preset"):
        DistillConfig(perturb="robt")


@pytest.mark.slow
def test_a_distillation_report_records_its_perturbation(tmp_path):
    from helpers import fixed_teacher

    from crl_distill.distill import DistillConfig, distill

    teacher = fixed_teacher(env="reacher")
    dcfg = DistillConfig(iterations=1, num_envs=4, steps_per_iter=6, sgd_steps_per_iter=3,
                         eval_episodes=2, perturb="obs_noise=2,obs_latency=0.04")
    res = distill(teacher, students="1x16", out=tmp_path / "s", progress=False, config=dcfg)
    row = res.report["students"][0]
    assert row["perturbation"]["obs_latency"] == 0.04 and row["perturbation"]["obs_noise"] == 2


def test_a_teacher_trains_on_perturbed_physics_but_sees_the_true_state():
    from crl_distill.teacher.config import TeacherConfig
    from crl_distill.teacher.train import training_env

    assert training_env(TeacherConfig(env="reacher")).name == "reacher"
    env = training_env(TeacherConfig(env="reacher", perturb="obs_noise=3,latency=0.04"))
    assert env.spec.action_latency == 0.04 and (env.spec.obs_noise, env.spec.obs_latency) == (0, 0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (6, 2, env.action_size)).astype(np.float32)
    seen, clean = _run(env, actions)
    np.testing.assert_allclose(seen, clean)  # the true state, every step
    plain, _ = _run(make("reacher"), np.concatenate([np.zeros_like(actions[:1]), actions[:-1]]))
    np.testing.assert_allclose(clean, plain, atol=1e-5)  # and the commands one period late
    with pytest.raises(CrlDistillError, match="not a preset"):
        TeacherConfig(perturb="robt")
