"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    import jax

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def add_native_distill_args(p: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that distill students from a teacher and score their files
    in native MuJoCo (robustness.py, recurrent.py): teacher, spec, seeds, episodes, the DAgger
    budget and where the files go."""
    p.add_argument("--teacher", required=True, help="teacher run directory or checkpoint")
    p.add_argument("--spec", default="robot", help="perturbation spec (crl-distill eval --perturb)")
    p.add_argument("--seeds", default="0,1,2", help="distillation seeds")
    p.add_argument("--episodes", type=int, default=128, help="native episodes per evaluation")
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--steps", type=int, default=42, help="env steps per env per DAgger round")
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--sgd-steps", type=int, default=300)
    p.add_argument("--distill-eval-episodes", type=int, default=8,
                   help="the distillation report's own (JAX) evaluation; not used here")
    p.add_argument("--work", default=None, help="students and files [/tmp/crl-BENCHMARK-ENV]")
    p.add_argument("--out", default=None)


def load_partial(out: Path, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict | None:
    """The partial result of an earlier run with the same arguments (those in `skip` aside), so
    that a killed run continues where it stopped; None when there is none."""
    try:
        old = json.loads(Path(out).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = {k: v for k, v in old.get("args", {}).items() if k not in skip}
    return old if same == {k: v for k, v in vars(args).items() if k not in skip} else None


class NativeBench:
    """What robustness.py and recurrent.py share once their options are parsed: the teacher, its
    env, the conditions (clean and `--spec`), the result file that a killed run continues
    (`skip`: options that may change between runs), and files scored in native MuJoCo."""

    def __init__(self, args: argparse.Namespace, name: str, skip: tuple[str, ...] = ()):
        from crl_distill.perturb import NONE, parse_perturbation
        from crl_distill.teacher.train import load_teacher

        self.args = args
        self.spec = parse_perturbation(args.spec)
        self.teacher = load_teacher(args.teacher)
        self.env = self.teacher.config.env
        tag = self.env.split(":")[0]
        self.out = Path(args.out or f"benchmarks/results/{name}_{tag}.json")
        self.work = Path(args.work or f"/tmp/crl-{name}-{tag}")
        self.work.mkdir(parents=True, exist_ok=True)
        self.seeds = [int(s) for s in args.seeds.split(",")]
        self.conditions = {"clean": NONE, "robot": self.spec}
        self.result = load_partial(self.out, args, skip) or {
            "args": vars(args), "env": self.env, "spec": self.spec.to_dict(), "cells": {}}
        self.result["machine"] = machine_info()

    def native(self, onnx: Path) -> dict:
        """The file's native-MuJoCo summary under each condition (same starts, seed 0)."""
        from crl_distill.evaluation import evaluate_native

        return {c: evaluate_native(str(onnx), self.args.episodes, 0, s, training_sim=False)["native"]
                for c, s in self.conditions.items()}

    def keep(self) -> None:
        write_json(self.out, self.result)

    def teacher_native(self) -> dict:
        """The teacher's file (exported ungated) in native MuJoCo under every condition,
        measured once and kept in the result; returns its clean summary, what retention divides
        by and what each student file records as its teacher's figure."""
        from crl_distill.export.onnx_export import export

        if "teacher" not in self.result:
            t_file = export(self.args.teacher, out=self.work / "teacher.onnx", skip_gates=True).path
            self.result["teacher"] = {"native": self.native(t_file)}
            self.keep()
        clean = self.result["teacher"]["native"]["clean"]
        print(f"teacher: native time at goal clean {clean['time_at_goal']:.1f}, under "
              f"{self.spec.describe()} {self.result['teacher']['native']['robot']['time_at_goal']:.1f}",
              flush=True)
        return clean
