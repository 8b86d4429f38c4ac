"""The `crl-distill` command: a thin layer over the Python API of each stage.

Every user error (`CrlDistillError`) is printed as one line and exits with code 2; nothing in
this module does real work, so a notebook user calls the same functions the CLI calls.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import typing
from collections.abc import Callable, Collection
from inspect import Parameter, Signature, cleandoc, signature  # `inspect` is a command here
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from crl_distill.distill.config import DistillConfig
from crl_distill.distill.config import field_help as distill_help
from crl_distill.distributed import DEFAULT_TIMEOUT_S
from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.loggers import DEFAULT_LOGGER
from crl_distill.teacher.config import PRESET_FIELDS, NetConfig, TeacherConfig
from crl_distill.teacher.config import field_help as teacher_help

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Deep contrastive-RL teachers -> shallow students -> ONNX policies for robots.",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _unwrap(doc: str) -> str:
    """`doc` with each paragraph on one line. Typer's rich mode keeps a docstring's hard line
    breaks and rich then wraps again at the terminal's width, which breaks lines mid-sentence;
    a paragraph starting with \\b (click's "keep as typed") stays as it is."""
    paragraphs = cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


class _Command(TyperCommand):
    """Every command's help as written: paragraphs unwrapped (rich wraps them), option help
    escaped (a default shown as "[runs/<env>-<time>]" is text, not rich markup to drop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = escape(_unwrap(self.help))
        for param in self.params:
            if getattr(param, "help", None):
                param.help = escape(param.help)  # type: ignore[attr-defined]


def _command(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return app.command(name, cls=_Command)


@dataclasses.dataclass(frozen=True)
class _ConfigOptions:
    """The CLI options of a config dataclass's fields, built from each field's `setting`
    (crl_distill.settings): its default, its help (through `help`), its flag where that is not
    `--field-name`, a switch (--bf16 sets dtype "bfloat16"). Fields with `no_cli` have none.

    unset:  fields whose option defaults to None, "let the machine preset decide".
    expand: a field replaced by the options of another config's fields, at its place
            (TeacherConfig.actor -> NetConfig's options, which set both networks).
    """

    cls: type
    help: Callable[[str], str]
    unset: Collection[str] = ()
    expand: dict[str, type] = dataclasses.field(default_factory=dict)

    def fields(self) -> list[tuple[type, dataclasses.Field]]:
        out: list[tuple[type, dataclasses.Field]] = []
        for f in dataclasses.fields(self.cls):
            if f.name in self.expand:
                out += [(self.expand[f.name], g) for g in dataclasses.fields(self.expand[f.name])
                        if g.metadata.get("no_cli") is None]
            elif f.metadata.get("no_cli") is None:
                out.append((self.cls, f))
        return out

    def parameters(self) -> list[Parameter]:
        params = []
        hints = {cls: typing.get_type_hints(cls) for cls in (self.cls, *self.expand.values())}
        for cls, f in self.fields():
            kind, default = hints[cls][f.name], f.default
            if f.metadata["switch"] is not None:
                kind, default = bool, False
            elif f.name in self.unset:
                kind, default = kind | None, None
            decls = [f.metadata["flag"]] if f.metadata["flag"] else []
            option = typer.Option(*decls, help=self.help(f.name))
            params.append(Parameter(f.name, Parameter.KEYWORD_ONLY, default=default,
                                    annotation=Annotated[kind, option]))
        return params

    def values(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Takes this config's options out of a command's `kwargs`, as field values (a switch
        given: its value; not given: the field's default; None: unset)."""
        out = {}
        for _, f in self.fields():
            value = kwargs.pop(f.name)
            if f.metadata["switch"] is not None:
                value = f.metadata["switch"] if value else f.default
            out[f.name] = value
        return out


def _with_config_options(*groups: _ConfigOptions) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates a command whose parameter `settings` stands for the groups' options: typer sees
    them in its place, and the command gets them as `settings`, a {field: value} dict."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        generated = [p for g in groups for p in g.parameters()]
        params: list[Parameter] = []
        for p in signature(fn, eval_str=True).parameters.values():
            params += generated if p.name == "settings" else [p.replace(kind=p.KEYWORD_ONLY)]
        names = [p.name for p in params]
        if len(set(names)) != len(names) or not {p.name for p in generated} <= set(names):
            raise TypeError(f"{fn.__name__}: an option name twice, or no `settings`: {names}")

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            settings: dict[str, Any] = {}
            for g in groups:
                settings.update(g.values(kwargs))
            return fn(settings=settings, **kwargs)

        command.__signature__ = Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


#: the options of `crl-distill teacher` / `student` that set config fields
_TEACHER_OPTIONS = _ConfigOptions(TeacherConfig, teacher_help, unset=PRESET_FIELDS,
                                  expand={"actor": NetConfig})
_STUDENT_OPTIONS = _ConfigOptions(DistillConfig, distill_help)


PAPER_DIFFERENCES = (
    "the humanoid state is 246-dim (the paper's 268 carries the commanded target, a goal leak; "
    "reference humanoid checkpoints are refused); the point mazes are this project's own. "
    "Everything else (layouts, start/goal cells, dt, early termination, walls) is the paper's."
)


@_command()
def envs(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Also state/goal sizes and backend.")] = False,
) -> None:
    """List every environment: sizes, goal layout, episode length, success threshold, backend."""
    from crl_distill.envs import REGISTRY, make

    rows = [make(name).describe() for name in REGISTRY]
    if as_json:
        import json

        print(json.dumps(rows, indent=2))
        return
    table = Table(title="crl-distill environments")
    # Fits 80 columns; --wide adds the rest. Every column is explained in the lines below it.
    cols = ["name", "obs", "act", "goal", "steps", "succ<", "dt s", "term"]
    if wide:
        cols[1:2] = ["obs", "state", "goal n"]
        cols.append("backend")
    for col in cols:
        table.add_column(col, no_wrap=True, min_width=len(col) if col != "name" else 21)
    for r in rows:
        idx = r["goal_indices"]
        contiguous = idx == list(range(idx[0], idx[-1] + 1))
        cells = {
            "name": r["name"], "obs": str(r["observation_size"]), "state": str(r["state_size"]),
            "goal n": str(r["goal_size"]), "act": str(r["action_size"]),
            "goal": f"{idx[0]}:{idx[-1] + 1}" if contiguous else str(idx),
            "steps": str(r["episode_length"]), "succ<": f"{r['success_threshold']:g}",
            "dt s": f"{r['control_period']:g}", "backend": r["backend"],
            "term": "no" if r["termination"] == "none" else "yes",
        }
        table.add_row(*(cells[c] for c in cols))
    console.print(table)
    console.print("obs = concat(state, goal) size; act = action size; goal = goal indices in the "
                  "state; steps = episode length; succ< = success distance (m); dt s = seconds per "
                  "env step; term = ends early (below). Per env:", highlight=False)
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        console.print(f"  [bold]{r['name']}[/]: {r['layout']}", highlight=False)
        console.print(f"    goals: {r['goal_distribution']}; early end: {r['termination']}"
                      + (f"; options (NAME:key=value): {opts}" if opts else ""), highlight=False)
    console.print("Differences from the paper's environments: " + PAPER_DIFFERENCES, highlight=False)


LoggerOpt = Annotated[str, typer.Option(
    help="Live metrics: tensorboard (RUN_DIR/tb) | wandb (pip extra: wandb) | none.")]
WandbProjectOpt = Annotated[str | None, typer.Option(help="W&B project [crl-distill].")]
WandbNameOpt = Annotated[str | None, typer.Option(help="W&B run name [the directory's name].")]


# options of several commands, their help typed once
EvalSeedOpt = Annotated[int, typer.Option(help="Evaluation seed.")]
ActSamplesOpt = Annotated[int, typer.Option(
    help="Teacher acts with its critic: best of K actor candidates [1 = the actor].")]
OnnxFileArg = Annotated[Path, typer.Argument(help="Exported policy (.onnx).")]


def _live(logger: str, project: str | None, name: str | None) -> dict[str, Any]:
    return {"logger": logger, "logger_options": {k: v for k, v in
                                                 (("project", project), ("name", name)) if v}}


@_command()
@_with_config_options(_TEACHER_OPTIONS)
def teacher(
    *,
    settings: dict[str, Any],
    actor_depth: Annotated[int | None, typer.Option(help="Override the actor's depth.")] = None,
    critic_depth: Annotated[int | None, typer.Option(help="Override phi/psi depth.")] = None,
    total_env_steps: Annotated[int | None, typer.Option(
        help="Env steps to train for (sets --epochs).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory [runs/<env>-<time>].")] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Train one teacher per seed in one program (vmapped), e.g. 0,1,2: run directories "
             "OUT/seed-0, OUT/seed-1, ... (replaces --seed).")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a killed run from its last checkpoint (its saved config is used); a "
             "directory of seed-N runs continues all its seeds.")] = None,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Join a multi-process run (jax.distributed): one process per "
        "host, or `python -m crl_distill.launch -n N -- ...` locally.")] = False,
    coordinator: Annotated[str | None, typer.Option(
        help="With --distributed: HOST:PORT of process 0 [env CRL_DISTILL_COORDINATOR; "
        "unset: JAX's cluster detection].")] = None,
    num_processes: Annotated[int | None, typer.Option(
        help="With --distributed: processes in the run [env CRL_DISTILL_NUM_PROCESSES].")] = None,
    process_id: Annotated[int | None, typer.Option(
        help="With --distributed: this process's index [env CRL_DISTILL_PROCESS_ID].")] = None,
    distributed_timeout: Annotated[int, typer.Option(
        help="With --distributed: seconds to wait for the coordinator and the other processes."
        )] = DEFAULT_TIMEOUT_S,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
    logger: LoggerOpt = DEFAULT_LOGGER,
    wandb_project: WandbProjectOpt = None,
    wandb_name: WandbNameOpt = None,
) -> None:
    """Train a deep goal-conditioned contrastive RL teacher (residual MLPs up to 1000 layers).

    Defaults come from a preset for the machine: on CPU a minutes-long pointmaze run (with
    longer epochs and budgets of their own for the reacher and the ant), on GPU the paper's
    settings (512 envs, batch 256, width 256). The network options (--depth,
    --width, --layer-norm, ...) set actor and critic alike. Writes config.json, metrics.jsonl,
    checkpoints/ and learning_curve.png into the run directory.
    """
    import time

    if distributed:
        from crl_distill.distributed import initialize, spec_from

        initialize(spec_from(coordinator, num_processes, process_id, distributed_timeout))
    elif coordinator or num_processes or process_id is not None:
        _fail("--coordinator, --num-processes and --process-id need --distributed")
    from crl_distill.teacher import configure, train_seeds, train_teacher
    from crl_distill.teacher.run_dir import seed_runs

    live = _live(logger, wandb_project, wandb_name)
    seed_list = _parse_seeds(seeds) if seeds is not None else None
    if resume is not None:
        results = ([*train_seeds(None, resume, resume=True, progress=progress, **live)]
                   if seed_runs(resume) else
                   [train_teacher(None, resume, resume=True, progress=progress,  # type: ignore[arg-type]
                                  **live)])
    else:
        from crl_distill.envs import make

        make(settings["env"])  # fail fast, before any compile, on a bad name
        cfg = configure(**settings, actor_depth=actor_depth, critic_depth=critic_depth,
                        total_env_steps=total_env_steps)
        out = out or Path("runs") / f"{cfg.env}-{time.strftime('%Y%m%d-%H%M%S')}"
        results = (train_seeds(cfg, out, seed_list, progress=progress, **live) if seed_list
                   else [train_teacher(cfg, out, progress=progress, **live)])
    for result in results:
        last = result.metrics[-1] if result.metrics else {}
        console.print(f"teacher run: [bold]{result.run_dir}[/]  success_any "
                      f"{last.get('eval/success_any', float('nan')):.3f}  time at goal "
                      f"{last.get('eval/time_at_goal', float('nan')):.1f}")


def _parse_seeds(text: str) -> list[int]:
    return _parse_ints("--seeds", text)


@_command()
@_with_config_options(_STUDENT_OPTIONS)
def student(
    *,
    from_: Annotated[Path, typer.Option(
        "--from", help="Teacher run directory, checkpoint, or reference .pkl (needs --env).")],
    students: Annotated[str, typer.Option(
        help="Comma-separated DEPTHxWIDTH MLPs and recurrent students gruH / lstmH "
             "(e.g. 2x64,gru64,lstm64).")] = "2x64,2x256",
    out: Annotated[Path | None, typer.Option(help="Output dir [TEACHER_RUN/students].")] = None,
    env: Annotated[str | None, typer.Option(help="Must match the teacher's env if given.")] = None,
    settings: dict[str, Any],
    encoders: Annotated[bool, typer.Option("--encoders", help="Also distill phi/psi.")] = False,
    layer_norm: Annotated[bool, typer.Option("--layer-norm", help="LayerNorm in students.")] = False,
    obs_state: Annotated[str | None, typer.Option(
        help="Teacher state elements students see, e.g. 0:15,21 [all]; goal always.")] = None,
    obs_history: Annotated[int, typer.Option(
        help="Past observations (of those elements) students also see.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Console output.")] = True,
    logger: LoggerOpt = DEFAULT_LOGGER,
    wandb_project: WandbProjectOpt = None,
    wandb_name: WandbNameOpt = None,
) -> None:
    """Distill shallow student policies from a teacher (`--from RUN_DIR`).

    Trains every student in `--students`, evaluates students and teacher on the same seeds and
    writes student checkpoints, distill_report.json and retention.png. With --obs-state and
    --obs-history a student sees less than its teacher (a deployable sensor set); the teacher
    still labels from its full state.
    """
    from crl_distill.distill import distill

    cfg = DistillConfig(**settings)
    from crl_distill.obs_spec import ObsSpec

    obs = ObsSpec.parse(obs_state, obs_history)
    result = distill(from_, students=students, out=out, config=cfg, env=env, progress=progress,
                     **_live(logger, wandb_project, wandb_name),
                     encoders=encoders, layer_norm=layer_norm, obs=obs)
    console.print(f"students written to [bold]{result.out_dir}[/]")


@_command()
def export(
    from_: Annotated[Path, typer.Option("--from", help="Student dir/file, or teacher run/ckpt.")],
    out: Annotated[Path | None, typer.Option(help="Target .onnx [policy.onnx beside source].")] = None,
    student: Annotated[str | None, typer.Option(
        help="Student name in a student dir, e.g. 2x256 [smallest with >=95% retention].")] = None,
    episodes: Annotated[int, typer.Option(help="Closed-loop parity episodes.")] = 128,
    seed: EvalSeedOpt = 0,
    skip_gates: Annotated[bool, typer.Option(
        "--skip-gates", help="Skip the parity gates (recorded in the file's metadata).")] = False,
    format_: Annotated[str, typer.Option(
        "--format", help="onnx | c (also a dependency-free C99 policy.h/.c; students).")] = "onnx",
    cc: Annotated[str | None, typer.Option(help="C compiler for the C gates [cc].")] = None,
    io_names: Annotated[str, typer.Option(
        help="Graph I/O names: crl (obs -> action) | rsl_rl (obs -> actions; a recurrent "
             "student's state h_in/c_in -> h_out/c_out as [1, batch, H] instead of [batch, H]).")] = "crl",
    opset: Annotated[int, typer.Option(help="ONNX opset (13-23) for older on-robot runtimes.")] = 23,
    act_samples: ActSamplesOpt = 1,
    robust: Annotated[str | None, typer.Option(
        help="Also gate robustness: the file in native MuJoCo under this perturbation (as `eval "
             "--perturb`) must keep --min-retention x the clean teacher's time at goal.")] = None,
    min_retention: Annotated[float, typer.Option(
        help="Fraction of the clean teacher's time at goal the --robust gate requires.")] = 0.8,
) -> None:
    """Export a student (or teacher) policy to ONNX and run the parity gates.

    Gates: onnx checker + shape inference; onnxruntime vs JAX max |diff| <= 1e-5 at batch
    1/2/7/64 (and onnx.reference); closed-loop success parity on the same seeds. A failed gate
    exits non-zero and leaves nothing at the target path. --format c adds policy.h/policy.c
    (weights as static arrays, no malloc), compiled with -std=c99 -Wall -Wextra -Werror and
    matched against the ONNX file within 1e-5.
    """
    from crl_distill.export import export as run_export

    res = run_export(from_, out=out, student=student, skip_gates=skip_gates, episodes=episodes,
                     seed=seed, fmt=format_, cc=cc, io_names=io_names, opset=opset,
                     act_samples=act_samples, robust=robust, min_retention=min_retention)
    g = res.report["gates"]
    if g.get("skipped"):
        console.print(f"[yellow]gates skipped[/]; wrote [bold]{res.path}[/]")
        return
    cl = g["closed_loop"]
    console.print(
        f"wrote [bold]{res.path}[/] ({res.report['bytes']:,} bytes)"
        + (f" and {res.critic_path}" if res.critic_path else "")
        + f"\n  numeric parity: max |diff| {g['numeric']['max_abs_diff']:.2e} on "
        f"{g['numeric']['observations']} obs, batch 1/2/7/64"
        f"\n  closed loop: success {cl['success_episodes_onnx']}/{cl['episodes']} (ONNX) vs "
        f"{cl['success_episodes_jax']}/{cl['episodes']} (JAX); action deviation max "
        f"{cl['action_deviation_max']:.2e}", highlight=False)
    if "robust" in g:
        rb = g["robust"]
        console.print(f"  robust (native MuJoCo, {rb['episodes']} episodes): time at goal "
                      f"{rb['native']['time_at_goal']:.1f} = {rb['retention_time_at_goal']:.2f} x "
                      f"the clean teacher's {rb['teacher_time_at_goal']:.1f} (min "
                      f"{rb['min_retention']:g})", highlight=False)
    if res.c_paths:
        c = res.report["c"]
        console.print(f"wrote [bold]{', '.join(map(str, res.c_paths))}[/]\n  C vs ONNX: max |diff| "
                      f"{c['max_abs_diff']:.2e} on {c['observations']} obs ({c['golden']} golden), "
                      f"{c['warnings']} compiler warnings ({c['flags']})", highlight=False)


@_command()
def verify(
    path: OnnxFileArg,
) -> None:
    """Check an exported file on this machine with numpy + onnxruntime only (no JAX).

    Replays the golden pairs stored in the file on this onnxruntime (within 1e-5) and checks
    the metadata and the weights against the hash recorded at export. Exit 0, or one line and
    exit 2.
    """
    from crl_distill.runtime import verify as verify_file

    r = verify_file(path)
    golden = (f"a golden sequence of {r['golden']} steps" if r.get("golden_sequence")
              else f"{r['golden']} golden pairs")
    console.print(f"{path}: OK ({golden}, max |diff| {r['max_abs_diff']:.1e}; "
                  f"weights {r['weights']})", highlight=False)


@_command()
def inspect(
    path: OnnxFileArg,
) -> None:
    """Print an exported file's interface: what goes in, what comes out, at what rate."""
    from rich.markup import escape
    from rich.table import Table

    from crl_distill.runtime import OnnxPolicy

    policy = OnnxPolicy(path)
    m = policy.metadata
    t = Table(title=f"{path}", show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    spec = m.get("observation_spec")
    rows = [
        ("policy", f"{m.get('kind')} {m.get('name')} for {m.get('env')}"),
        ("graph", f"{policy.session.get_inputs()[0].name} float32 [batch, {policy.input_size}] -> "
                  f"{policy.session.get_outputs()[0].name} float32 [batch, {policy.action_size}]"
                  f" (opset {m.get('opset', '?')}, io names {m.get('io_names', 'crl')})"),
        ("input", str(m.get("input", ""))),
        *_recurrent_rows(m.get("recurrent")),
        ("env layout", str(m.get("layout", ""))),
        ("student observes", "the env's full observation" if spec is None else
         f"state indices {spec['state_indices']} of {spec['teacher_state_size']}, "
         f"{spec['history']} past step(s), then the goal"),
        ("observation names", str(m.get("observation_names", "not recorded"))),
        ("action", f"{policy.action_size} values in [{policy.action_low}, {policy.action_high}]"
                   f": {m.get('action_names', '')}"),
        ("control period", f"{policy.control_period} s ({1 / policy.control_period:.0f} Hz)"
         if policy.control_period else "?"),
        ("success", f"goal distance < {m.get('success_threshold')} over {m.get('episode_length')} "
                    f"steps; goal indices {m.get('goal_indices')}"),
        ("gates", "skipped" if m.get("gates_skipped") else
         ", ".join(k for k, v in (m.get("gates") or {}).items()
                   if isinstance(v, dict) and v.get("passed"))),
        ("native model", "yes (crl-distill eval --sim mujoco)" if m.get("native") else "no"),
        ("robustness", _robust_row((m.get("gates") or {}).get("robust"))),
        ("weights sha256", str(m.get("weights_sha256", "not recorded"))[:16] + "..."),
    ]
    for k, v in rows:
        t.add_row(k, escape(v))  # shapes like [batch, 4] are not markup
    console.print(t)


def _recurrent_rows(rec: dict | None) -> list[tuple[str, str]]:
    """inspect's lines for a recurrent file: the state in and out, with shapes, and the reset rule."""
    if not rec:
        return []
    shape = "[" + ", ".join(str(d) for d in rec.get("state_shape", [])) + "]"
    return [("memory", f"{str(rec.get('cell', '?')).upper()} of {rec.get('hidden_size')} units: "
                       f"{', '.join(rec.get('state_inputs', []))} -> "
                       f"{', '.join(rec.get('state_outputs', []))}, each float32 {shape}"),
            ("reset", str(rec.get("reset", "")))]


@_command("eval")
def eval_(
    from_: Annotated[Path, typer.Option("--from", help="Teacher run, student dir/file, or .onnx.")],
    env: Annotated[str | None, typer.Option(help="Evaluate on this env [the artifact's].")] = None,
    episodes: Annotated[int, typer.Option(help="Episodes (seeded, same for every artifact).")] = 256,
    act_samples: ActSamplesOpt = 1,
    seed: EvalSeedOpt = 0,
    student: Annotated[str | None, typer.Option(help="Student name in a student dir.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    sim: Annotated[str, typer.Option(help="Also run in this simulator: `mujoco` (native MuJoCo, "
                                          "an exported .onnx only).")] = "none",
    perturb: Annotated[str | None, typer.Option(
        help="Evaluate under sensor noise, latency, model error and pushes: a preset (none, "
             "mild, robot, legged = robot + pushes) or fields, e.g. "
             "latency=0.02,obs_noise=1,mass=0.8:1.2,push=2 (README, \"Robot perturbations\")."
             )] = None,
) -> None:
    """Evaluate a teacher run, a student or an exported ONNX file on fixed seeds.

    Prints time at goal, success_any and final distance with 95% confidence intervals. With
    `--sim mujoco`, runs the exported file in the training simulator and in native MuJoCo from
    the same starts and goals and prints both side by side. `--perturb` keeps the starts and
    goals and adds the robot's trouble in every simulator it runs.
    """
    from crl_distill.perturb import parse_perturbation

    require_choice("--sim", sim, ("none", "mujoco"))
    spec = parse_perturbation(perturb)
    if sim == "mujoco":
        _eval_native(from_, env, episodes, seed, as_json, spec)
        return
    from crl_distill.artifacts import load_artifact
    from crl_distill.evaluation import evaluate_artifact
    from crl_distill.teacher.acting import Acting

    r = evaluate_artifact(load_artifact(from_, student, acting=Acting(act_samples)), env=env,
                          episodes=episodes, seed=seed, perturb=spec)
    if as_json:
        import json

        print(json.dumps(r, indent=2))
        return
    table = Table(title=f"{r['kind']} {r['name']} on {r['env']} ({int(r['episodes'])} episodes, "
                        f"seed {seed}{_perturbed_by(spec)})")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    for k in ("success_any", "time_at_goal", "final_dist"):
        table.add_row(k, f"{r[k]:.3f}", f"± {r[k + '_ci95']:.3f}")
    console.print(table)


@_command()
def robustness(
    from_: Annotated[Path, typer.Option("--from", help="An exported .onnx file.")],
    episodes: Annotated[int, typer.Option(help="Episodes per level (the same seeds at each).")] = 64,
    seed: EvalSeedOpt = 0,
    factors: Annotated[str | None, typer.Option(
        help="Comma-separated factors [obs_noise,latency,action_noise,mass,friction,gain,"
             "damping,push; those a file cannot take are skipped with the reason].")] = None,
    out: Annotated[Path | None, typer.Option(
        help="JSON path [<file>_robustness.json beside the file]; the PNG beside it.")] = None,
) -> None:
    """Sweep each perturbation factor over 5 levels in native MuJoCo: time at goal and
    success_any with 95% intervals per level, and the first level keeping less than 0.8 of
    the clean time at goal. Writes JSON and PNG."""
    from crl_distill.fileio import atomic_write_json
    from crl_distill.robustness import plot_robustness
    from crl_distill.robustness import robustness as run

    if from_.suffix != ".onnx":
        _fail(f"robustness runs an exported policy: {from_} is not an .onnx file")
    r = run(from_, episodes=episodes, seed=seed,
            factors=[f.strip() for f in factors.split(",")] if factors else None)
    out = out or from_.with_name(f"{from_.stem}_robustness.json")
    atomic_write_json(out, r)
    png = plot_robustness(r, out.with_suffix(".png"))
    table = Table(title=f"{from_.name} on {r['env']}, native MuJoCo, {episodes} episodes per "
                        f"level; clean time at goal {r['clean']['time_at_goal']:.1f}")
    for col in ("factor", "levels", "time at goal per level", "retention < 0.8 from"):
        table.add_column(col)
    for f, v in r["factors"].items():
        rows = v["levels"]
        table.add_row(f, " ".join(f"{x['level']:g}" for x in rows),
                      " ".join(f"{x['time_at_goal']:.0f}" for x in rows),
                      "-" if v["breaks_at"] is None else f"{v['breaks_at']:g}")
    for f, why in r["skipped"].items():
        table.add_row(f, "skipped", why, "")
    console.print(table)
    console.print(f"wrote {out} and {png}", highlight=False)


def _robust_row(rb: dict | None) -> str:
    if not rb:
        return "not tested (export --robust SPEC)"
    from crl_distill.perturb import Perturbation

    spec = Perturbation.from_dict(rb["perturbation"])
    fields = f" ({spec.describe()})" if spec.preset else ""
    return (f"under {spec.name}{fields}: native time at goal {rb['native']['time_at_goal']:.1f} = "
            f"{rb['retention_time_at_goal']:.2f} x the clean teacher's (min {rb['min_retention']:g})")


def _perturbed_by(spec: Any) -> str:
    return "" if spec.is_none else f", perturbed: {spec.name}"


def _eval_native(path: Path, env: str | None, episodes: int, seed: int, as_json: bool,
                 spec: Any) -> None:
    from crl_distill.evaluation import evaluate_native

    if path.suffix != ".onnx":
        _fail(f"--sim mujoco runs an exported policy: {path} is not an .onnx file")
    if env is not None:
        _fail("--sim mujoco evaluates on the file's own robot; drop --env")
    r = evaluate_native(str(path), episodes=episodes, seed=seed, perturb=spec)
    if as_json:
        import json

        print(json.dumps(r, indent=2))
        return
    table = Table(title=f"{path.name} on {r['env']}: training simulator vs native MuJoCo "
                        f"({episodes} episodes, seed {seed}{_perturbed_by(spec)})")
    for col in ("metric", "brax (JAX)", "native MuJoCo", "native / brax"):
        table.add_column(col, justify="right")
    for k in ("success_any", "time_at_goal", "final_dist"):
        b, n = r["brax"], r["native"]
        table.add_row(k, f"{b[k]:.3f} ± {b[k + '_ci95']:.3f}", f"{n[k]:.3f} ± {n[k + '_ci95']:.3f}",
                      f"{r['ratio'][k]:.2f}" if k in r["ratio"] else "")
    console.print(table)


@_command()
def pipeline(
    env: Annotated[str, typer.Option(help="Environment.")] = "pointmaze_u",
    depth: Annotated[int, typer.Option(help="Teacher depth (multiple of 4).")] = 4,
    out: Annotated[Path | None, typer.Option(help="Output dir [runs/pipeline-ENV-dDEPTH].")] = None,
    students: Annotated[str, typer.Option(help="Student specs.")] = "2x64,2x256",
    total_env_steps: Annotated[int | None, typer.Option(help="Teacher env steps.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Teacher epochs [preset].")] = None,
    episodes: Annotated[int, typer.Option(help="Evaluation episodes.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    act_samples: Annotated[int, typer.Option(
        help="Compare the actor with the best of K actor samples under the critic; students "
             "imitate the critic's choice only if it is no worse in success and time at goal "
             "and better in one [1: the actor, no comparison].")] = 16,
    robust: Annotated[str, typer.Option(
        help="Robot envs: distill under this perturbation and export only a file that keeps "
             "--min-retention of the clean teacher's time at goal under it in native MuJoCo "
             "('none': off) [auto: the robot preset on envs with a native model].")] = "auto",
    min_retention: Annotated[float, typer.Option(
        help="With --robust: the export gate's floor, in (0, 1].")] = 0.8,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Console.")] = True,
    logger: LoggerOpt = DEFAULT_LOGGER,
    wandb_project: WandbProjectOpt = None,
    wandb_name: WandbNameOpt = None,
) -> None:
    """Teacher -> acting mode -> students -> ONNX export + parity gates -> latency, one summary.

    CPU defaults finish in minutes on 2 cores for the point maze. On a robot env (reacher, ant)
    it ends in a robot-ready file: MuJoCo's solver (backend=mjx; the ant with 2 m goals on
    CPU), students distilled under --robust, the export gated under it in native MuJoCo, and the
    native sim-to-sim and robustness rows in the summary. Each stage is skipped when its output
    already exists and is valid, so rerunning after an interruption continues where it stopped.
    Writes summary.md, summary.png and summary.json into the output directory.
    """
    from crl_distill.pipeline import run_pipeline

    overrides = {k: v for k, v in (("total_env_steps", total_env_steps), ("epochs", epochs))
                 if v is not None}
    res = run_pipeline(env=env, out=out, depth=depth, students=students,
                       teacher_overrides=overrides, episodes=episodes, seed=seed,
                       act_samples=act_samples, progress=progress, robust=robust,
                       min_retention=min_retention, **_live(logger, wandb_project, wandb_name))
    console.print(f"summary: [bold]{res.out / 'summary.md'}[/] and {res.out / 'summary.png'}")


@_command()
def sweep(
    env: Annotated[str, typer.Option(help="Environment every cell trains on.")] = "pointmaze_u",
    depths: Annotated[str, typer.Option(help="Teacher depths, comma-separated.")] = "4,16,64",
    widths: Annotated[str | None, typer.Option(
        help="Teacher widths, comma-separated [the preset's].")] = None,
    seeds: Annotated[str, typer.Option(
        help="N (seeds 0..N-1) or a comma-separated list; vmapped in one program per cell."
        )] = "3",
    total_env_steps: Annotated[int | None, typer.Option(
        help="Env steps per teacher, the same in every cell [the preset's epochs].")] = None,
    students: Annotated[str | None, typer.Option(
        help="Distill every cell's teachers into these students, e.g. 2x64 [none].")] = None,
    out: Annotated[Path, typer.Option(help="Sweep directory.")] = Path("runs/sweep"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Progress bars while cells train.")] = True,
) -> None:
    """A grid of teachers over depth (and width), several seeds each, with the depth figures.

    Every cell trains for the same env steps and SGD steps. Writes sweep.json, sweep.md,
    sweep_curves.png (success and time at goal against env steps, 95% bands over seeds) and
    sweep_params.png (final success against parameter count). A rerun continues where it
    stopped.
    """
    from crl_distill.sweep import run_sweep

    seed_list = (list(range(int(seeds))) if seeds.strip().isdigit() and "," not in seeds
                 else _parse_seeds(seeds))
    summary = run_sweep(env, _parse_ints("--depths", depths), seed_list, out,
                        widths=_parse_ints("--widths", widths) if widths else None,
                        total_env_steps=total_env_steps, students=students, progress=progress)
    console.print(f"sweep: [bold]{out / 'sweep.md'}[/] ({len(summary['cells'])} cells x "
                  f"{len(seed_list)} seeds)")


def _parse_ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{flag} takes comma-separated integers, got {text!r}")
    if not values:
        _fail(f"{flag} names no value")
    return values


@_command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="Reference checkpoint (.pkl).")],
    env: Annotated[str, typer.Option(help="Environment the checkpoint was trained on.")],
    out: Annotated[Path, typer.Option(help="Teacher run directory to create.")],
    format: Annotated[str, typer.Option(help="auto | scaling-crl | jaxgcrl.")] = "auto",
    skip_connections: Annotated[int, typer.Option(
        help="JaxGCRL skip frequency (not stored in its params; JaxGCRL's default 4; 0 = none)."
    )] = 4,
    activation: Annotated[str, typer.Option(help="swish | relu (not stored in params).")] = "swish",
    energy: Annotated[str, typer.Option(help="Critic energy the checkpoint used.")] = "l2",
) -> None:
    """Convert a scaling-crl / JaxGCRL pickle into a crl-distill teacher (no retraining).

    The pickle is read with an allow-list unpickler that refuses anything but dicts, tuples,
    numpy/jax arrays and FrozenDicts. Depth, width and LayerNorm are read from the tree.
    """
    from crl_distill.teacher.reference_import import import_reference

    run = import_reference(path, env, out, fmt=format, skip_connections=skip_connections,
                           activation=activation, energy=energy)
    from crl_distill.teacher import load_teacher

    t = load_teacher(run)
    console.print(f"imported [bold]{path}[/] -> {run}: actor depth {t.config.actor.depth}, "
                  f"critic depth {t.config.critic.depth}, width {t.config.critic.width}, "
                  f"layer norm {t.config.critic.layer_norm}", highlight=False)


@_command()
def bench(
    from_: Annotated[Path, typer.Option("--from", help="Exported student .onnx or student dir.")],
    teacher: Annotated[Path | None, typer.Option(help="Teacher run [the student's teacher].")] = None,
    deep_depth: Annotated[int, typer.Option(help="Depth of the random-weight deep teacher.")] = 1000,
    onnx_deep: Annotated[bool, typer.Option("--onnx-deep/--no-onnx-deep",
                                            help="Also export and time the deep teacher.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG bar chart here.")] = None,
) -> None:
    """Latency: p50/p99/max at batch 1 (one thread) and throughput at batch 64 and 1024.

    Rows: ONNX student (OnnxPolicy.act and raw session.run), JIT JAX student, the JAX and ONNX
    teacher at its depth, and a depth-1000 teacher with random weights.
    """
    from crl_distill.timing import single_thread_xla_flags

    single_thread_xla_flags()
    from crl_distill.export.latency import plot_latency, print_latency_table, run_latency_benchmark
    from crl_distill.fileio import atomic_write_json

    result = run_latency_benchmark(from_, teacher, deep_depth=deep_depth, onnx_deep=onnx_deep,
                                   log=lambda m: err_console.print(m, style="dim"))
    print_latency_table(result)
    if json_out:
        atomic_write_json(json_out, result)
    if plot:
        plot_latency(result, plot)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # XLA's C++ logging and TF-style warnings are noise for CLI users; errors still surface.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        app(args=argv, standalone_mode=True)
    except CrlDistillError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]


if __name__ == "__main__":
    main()
