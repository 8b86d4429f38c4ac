"""One way for every config dataclass (NetConfig, TeacherConfig, DistillConfig) to document
its fields: each field's default and help are written once, as dataclass field metadata, and
the CLI builds its options from them (crl_distill.cli), so nothing restates them.

Light on purpose (no JAX, no typer): the configs import it at CLI start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            factory: Callable[[], Any] | None = None, flag: str | None = None,
            switch: Any = None, no_cli: str | None = None) -> Any:
    """A dataclass field that carries its help (and, where needed, how the CLI spells it).

    help:    the one description of the field (the CLI option's help, the API's docs).
    factory: default_factory, for mutable defaults (TeacherConfig.actor).
    flag:    the CLI declaration where it is not `--field-name`: "--lr",
             "--layer-norm/--no-layer-norm"; a bare "--name" on a bool field is a switch
             without a --no- form (the flags users already type keep working).
    switch:  the CLI option is a bool flag (`flag`) that sets the field to this value,
             otherwise the field keeps its default (--bf16 -> dtype "bfloat16").
    no_cli:  why the field deliberately has no CLI option (tests/test_cli_config.py requires
             every field to have an option or a reason).
    """
    if not help:
        raise ValueError("every setting needs its help")
    if switch is not None and flag is None:
        raise ValueError("a switch needs its flag")
    metadata = {"help": help, "flag": flag, "switch": switch, "no_cli": no_cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_of(cls: type, name: str) -> dataclasses.Field:
    """Field `name` of dataclass `cls`; KeyError names the field if it has none."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def help_of(cls: type, name: str) -> str:
    """The one description of field `name` of `cls` (as written in its `setting`)."""
    return field_of(cls, name).metadata["help"]

