"""The configs document themselves once (crl_distill.settings) and the CLI is built from them:
every field is one option with the field's default and help, or says why it has none; no help
text is typed twice; command help keeps its paragraphs at 80 columns. No training here: the
train / distill calls are replaced by fakes that record what the CLI asked for."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import typer.main
from rich.markup import escape
from typer.testing import CliRunner

import crl_distill.cli as cli
from crl_distill.distill.config import DistillConfig
from crl_distill.distill.config import field_help as distill_help
from crl_distill.errors import CrlDistillError
from crl_distill.teacher.config import (
    CPU_PRESET,
    ENV_CPU_PRESETS,
    PRESET_FIELDS,
    NetConfig,
    TeacherConfig,
    preset,
    preset_help,
)
from crl_distill.teacher.config import field_help as teacher_help

ROOT = Path(__file__).parent.parent
#: command: (its configs, their help, the fields whose default the machine preset decides)
CONFIGS = {"teacher": ((TeacherConfig, NetConfig), teacher_help, PRESET_FIELDS),
           "student": ((DistillConfig,), distill_help, frozenset())}
#: the public flags of `crl-distill teacher` / `student` before the options were built from the
#: configs (issue #25): they must keep working, spelled exactly so
TEACHER_FLAGS = {
    "--env", "--depth", "--actor-depth", "--critic-depth", "--width", "--total-env-steps",
    "--num-envs", "--batch-size", "--epochs", "--unroll-length", "--updates-per-iter",
    "--iters-per-epoch", "--num-eval-envs", "--lr", "--act-samples", "--alpha-lr", "--energy",
    "--contrastive-loss", "--logsumexp-penalty", "--layer-norm", "--no-layer-norm", "--residual",
    "--no-residual", "--activation", "--bf16", "--remat", "--seed", "--out", "--resume",
    "--replay-checkpoint-every", "--distributed", "--coordinator", "--num-processes",
    "--process-id", "--distributed-timeout", "--progress", "--no-progress", "--logger",
    "--wandb-project", "--wandb-name"}
#: flags added since, by later issues
# issue #26: seeds vmapped in one program; #27: domain randomization
TEACHER_FLAGS_ADDED = {"--seeds", "--perturb"}
STUDENT_FLAGS_ADDED = {"--perturb",  # issue #27: distillation under robot perturbations
                       "--bptt"}  # issue #28: recurrent students' sequence length
STUDENT_FLAGS = {
    "--from", "--students", "--out", "--env", "--mode", "--iterations", "--num-envs",
    "--steps-per-iter", "--sgd-steps", "--batch-size", "--lr", "--beta0", "--beta-decay",
    "--action-loss", "--encoders", "--w-action", "--w-embed", "--w-relational", "--layer-norm",
    "--label", "--label-samples", "--obs-state", "--obs-history", "--episodes", "--seed",
    "--progress", "--no-progress", "--logger", "--wandb-project", "--wandb-name"}


def _command(name: str):
    return typer.main.get_command(cli.app).commands[name]


def _flags(param) -> list[str]:
    return [*param.opts, *param.secondary_opts]


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_every_config_field_is_one_option_with_its_default_and_help_or_says_why(name):
    classes, help_of, unset = CONFIGS[name]
    params = _command(name).params
    flags = [f for p in params for f in _flags(p)]
    assert len(flags) == len(set(flags)), "a flag twice"
    by_name = {p.name: p for p in params}
    assert len(by_name) == len(params)
    options = 0
    for cls in classes:
        for f in dataclasses.fields(cls):
            meta = f.metadata
            assert meta["help"].strip(), f"{cls.__name__}.{f.name} has no help"
            if meta["no_cli"] is not None:
                assert len(meta["no_cli"]) > 20, f"{cls.__name__}.{f.name}: say why it has no option"
                assert f.name not in by_name, f"{f.name} says no_cli but has an option"
                continue
            p = by_name[f.name]
            options += 1
            want_flags = meta["flag"].split("/") if meta["flag"] else ["--" + f.name.replace("_", "-")]
            assert _flags(p) == want_flags, f.name
            assert p.help == escape(help_of(f.name)) and meta["help"].rstrip(".") in p.help, f.name
            if meta["switch"] is not None:
                assert p.is_flag and p.default is False, f.name
            elif f.name in unset:
                assert p.default is None and preset_help(f.name) in p.help, f.name
            else:
                assert p.default == f.default, f.name
    assert options >= 10  # the rest are hand-written, no config field (--out, --resume, ...)


def test_public_flags_are_unchanged():
    for name, want in (("teacher", TEACHER_FLAGS | TEACHER_FLAGS_ADDED),
                       ("student", STUDENT_FLAGS | STUDENT_FLAGS_ADDED)):
        got = {f for p in _command(name).params for f in _flags(p)}
        assert got == want, (name, got ^ want)


def test_preset_fields_default_to_none_and_show_both_presets():
    p = {q.name: q for q in _command("teacher").params}
    assert len([f for f in CPU_PRESET if f in p]) >= 7  # some (replay_capacity) have no option
    assert "[CPU 64, GPU 512]" in p["num_envs"].help
    assert "GPU 0.0003]" in p["alpha_learning_rate"].help
    assert "[CPU 10 (reacher 20, ant 40), GPU 32]" in p["iters_per_epoch"].help


def _teacher_cli(monkeypatch, args: list[str]) -> TeacherConfig:
    import crl_distill.teacher as teacher

    got = {}

    class Result:
        run_dir, metrics = "run", []

    def fake_train(cfg, out, **kwargs):
        got["cfg"] = cfg
        return Result()

    monkeypatch.setattr(teacher, "train_teacher", fake_train, raising=False)
    res = CliRunner().invoke(cli.app, ["teacher", *args, "--out", "unused"])
    assert res.exit_code == 0, res.output
    return got["cfg"]


def test_teacher_cli_builds_the_configs_it_is_given(monkeypatch):
    # JAX_PLATFORMS=cpu in the tests: the CLI picks the CPU preset; no option overrides it
    assert _teacher_cli(monkeypatch, []) == TeacherConfig(**preset("cpu"))
    cfg = _teacher_cli(monkeypatch, [
        "--lr", "1e-3", "--alpha-lr", "2e-3", "--bf16", "--no-layer-norm", "--no-residual",
        "--remat", "--depth", "8", "--critic-depth", "12", "--width", "32", "--num-envs", "8",
        "--activation", "relu", "--energy", "dot", "--act-samples", "3", "--seed", "5"])
    assert (cfg.learning_rate, cfg.alpha_learning_rate, cfg.num_envs) == (1e-3, 2e-3, 8)
    assert (cfg.energy, cfg.act_samples, cfg.seed) == ("dot", 3, 5)
    want = NetConfig(depth=8, width=32, layer_norm=False, residual=False, activation="relu",
                     dtype="bfloat16", remat=True)
    assert cfg.actor == want and cfg.critic == dataclasses.replace(want, depth=12)
    assert cfg.epochs == CPU_PRESET["epochs"]  # untouched preset fields keep the preset


def test_an_env_with_a_preset_of_its_own_gets_it_and_flags_still_win(monkeypatch):
    reacher = _teacher_cli(monkeypatch, ["--env", "reacher:backend=mjx"])
    assert reacher == TeacherConfig(env="reacher:backend=mjx", **preset("cpu", "reacher"))
    assert {k: getattr(reacher, k) for k in ENV_CPU_PRESETS["reacher"]} == ENV_CPU_PRESETS["reacher"]
    assert reacher.iters_per_epoch != CPU_PRESET["iters_per_epoch"]
    ant = _teacher_cli(monkeypatch, ["--env", "ant", "--num-eval-envs", "7"])
    assert (ant.updates_per_iter, ant.num_eval_envs) == (ENV_CPU_PRESETS["ant"]["updates_per_iter"], 7)
    # the ant's mazes are other envs: the general preset
    assert _teacher_cli(monkeypatch, ["--env", "ant_u_maze"]).iters_per_epoch == CPU_PRESET["iters_per_epoch"]
    # on GPU every preset field is the paper's, whatever the env
    assert preset("gpu", "reacher") == preset("gpu") and "iters_per_epoch" in preset("gpu")
    assert "reacher 20" in preset_help("iters_per_epoch")


def test_student_cli_builds_the_distill_config(monkeypatch):
    import crl_distill.distill as distill

    got = {}

    class Result:
        out_dir = "students"

    monkeypatch.setattr(distill, "distill", lambda teacher, **kw: got.update(kw) or Result(),
                        raising=False)
    runner = CliRunner()
    assert runner.invoke(cli.app, ["student", "--from", "t"]).exit_code == 0
    assert got["config"] == DistillConfig()
    res = runner.invoke(cli.app, ["student", "--from", "t", "--sgd-steps", "7", "--episodes", "3",
                                  "--lr", "0.01", "--label", "critic", "--layer-norm"])
    assert res.exit_code == 0, res.output
    assert got["config"] == DistillConfig(sgd_steps_per_iter=7, eval_episodes=3,
                                          learning_rate=0.01, label="critic")
    assert got["layer_norm"] is True


def test_configure_routes_fields_by_name():
    from crl_distill.teacher import configure

    cfg = configure("pointmaze_u", depth=16, platform="cpu")  # README, "Python API"
    assert cfg.actor.depth == cfg.critic.depth == 16 and cfg.num_envs == CPU_PRESET["num_envs"]
    gpu = configure(platform="gpu", width=64, dtype="bfloat16", actor_depth=8, batch_size=None)
    assert gpu.actor == NetConfig(depth=8, width=64, dtype="bfloat16")
    assert gpu.critic == NetConfig(width=64, dtype="bfloat16")
    assert gpu.batch_size == TeacherConfig().batch_size and gpu.num_envs == TeacherConfig().num_envs
    with pytest.raises(CrlDistillError, match="unknown: dept"):
        configure(dept=8, platform="cpu")
    with pytest.raises(CrlDistillError, match="width"):
        configure(width=0, platform="cpu")
    assert configure(platform="cpu", total_env_steps=10**6).epochs > 1


def _config_helps() -> list[str]:
    return [f.metadata["help"] for cls in (NetConfig, TeacherConfig, DistillConfig)
            for f in dataclasses.fields(cls)]


def test_no_help_string_is_typed_twice():
    helps = _config_helps()
    assert len(helps) == len(set(helps)), "two config fields share a help text"
    source = (ROOT / "crl_distill" / "cli.py").read_text()
    typed = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "help":
            if isinstance(node.value, ast.Constant):
                typed.append(node.value.value)
            elif isinstance(node.value, ast.JoinedStr):
                typed.append("".join(v.value for v in node.value.values if isinstance(v, ast.Constant)))
    assert len(typed) >= 30
    assert len(typed) == len(set(typed)), sorted(h for h in typed if typed.count(h) > 1)
    for h in helps:
        assert h not in source and h not in typed, h


def test_owned_modules_take_teacher_config_from_its_module():
    for path in ("crl_distill/cli.py", "teacher/__init__.py", "tests/test_cli_config.py"):
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "crl_distill.teacher.crl":
                assert "TeacherConfig" not in {a.name for a in node.names}, path


WIDTH = 80 - 2  # rich pads the description by one column on each side


def _description(output: str) -> list[list[str]]:
    """The paragraphs (lists of lines) between the usage line and the first panel."""
    lines = output.splitlines()
    start = next(i for i, x in enumerate(lines) if x.strip().startswith("Usage:")) + 1
    end = next(i for i, x in enumerate(lines) if x.startswith("╭"))
    paragraphs, cur = [], []
    for line in lines[start:end]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paragraphs.append(cur)
            cur = []
    return paragraphs + ([cur] if cur else [])


@pytest.mark.parametrize("name", sorted(typer.main.get_command(cli.app).commands))
def test_command_help_breaks_lines_only_where_they_are_full_at_80_columns(name):
    res = CliRunner().invoke(cli.app, [name, "--help"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    paragraphs = _description(res.output)
    doc = inspect.cleandoc(_command(name).callback.__doc__)
    want = [" ".join(p.split()) for p in doc.split("\n\n")]
    assert [" ".join(p) for p in paragraphs] == want  # every paragraph, in full, in order
    for lines in paragraphs:
        for line, after in zip(lines, lines[1:], strict=False):
            # a line ends early only if the next word would not have fitted on it
            assert len(line) + 1 + len(after.split()[0]) > WIDTH, (name, line, after)
    assert max(len(x) for x in res.output.splitlines()) <= 80


def test_option_help_shows_bracketed_defaults_as_text():
    """Help like "Run directory [runs/<env>-<time>]." is text, not rich markup (which dropped it)."""
    runner = CliRunner()
    out = runner.invoke(cli.app, ["teacher", "--help"], env={"COLUMNS": "200"}).output
    assert "[runs/<env>-<time>]" in out and "[env CRL_DISTILL_PROCESS_ID]" in out
    out = runner.invoke(cli.app, ["export", "--help"], env={"COLUMNS": "200"}).output
    assert "[policy.onnx beside source]" in out and "[cc]" in out
