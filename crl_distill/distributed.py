"""Joining a multi-process JAX run (one process per host, or several on one machine).

Each process calls `initialize` before any JAX computation; process 0 also hosts the
coordinator. Settings come from arguments or the environment variables below (the launcher
`python -m crl_distill.launch` sets them for N local processes).

XLA aborts the whole process, without a Python exception, when the coordinator cannot be
reached; so reachability is checked here first and reported as one line.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from crl_distill.errors import CrlDistillError

ENV_COORDINATOR = "CRL_DISTILL_COORDINATOR"
ENV_NUM_PROCESSES = "CRL_DISTILL_NUM_PROCESSES"
ENV_PROCESS_ID = "CRL_DISTILL_PROCESS_ID"
DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class DistributedSpec:
    """Where the coordinator listens (host:port), how many processes, and which one this is."""

    coordinator: str
    num_processes: int
    process_id: int
    timeout_s: int = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CrlDistillError(f"coordinator address {self.coordinator!r} is not HOST:PORT")
        if self.num_processes < 1:
            raise CrlDistillError(f"num-processes must be >= 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise CrlDistillError(f"process-id {self.process_id} is not in [0, "
                                  f"{self.num_processes})")
        if self.timeout_s < 1:
            raise CrlDistillError(f"distributed timeout must be >= 1 s, got {self.timeout_s}")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.coordinator.rpartition(":")
        return host.strip("[]"), int(port)


def spec_from(coordinator: str | None, num_processes: int | None, process_id: int | None,
              timeout_s: int = DEFAULT_TIMEOUT_S) -> DistributedSpec | None:
    """Arguments first, then the environment; None when neither names a coordinator (then JAX's
    own cluster detection, e.g. Slurm or Open MPI, is left to find the settings)."""
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if coordinator is None:
        return None

    def number(value: int | None, var: str) -> int:
        if value is not None:
            return value
        raw = os.environ.get(var)
        if raw is None or not raw.strip().lstrip("-").isdigit():
            raise CrlDistillError(f"a coordinator is given but {var} (or its option) is "
                                  f"{'missing' if raw is None else repr(raw)}")
        return int(raw)

    return DistributedSpec(coordinator, number(num_processes, ENV_NUM_PROCESSES),
                           number(process_id, ENV_PROCESS_ID), timeout_s)


def _check_reachable(spec: DistributedSpec) -> None:
    host, port = spec.host_port
    if spec.process_id == 0:
        try:
            with socket.create_server((host, port)):
                return
        except OSError as e:
            raise CrlDistillError(f"cannot host the coordinator on {spec.coordinator} "
                                  f"({e.strerror or e})") from None
    # Process 0 may start a little later than this one: retry until the timeout.
    deadline = time.monotonic() + spec.timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise CrlDistillError(f"coordinator {spec.coordinator} unreachable after "
                                      f"{spec.timeout_s} s ({e.strerror or e})") from None
            time.sleep(0.25)


def initialize(spec: DistributedSpec | None) -> None:
    """Join the run (JAX's auto-detection when `spec` is None); CPU processes use gloo
    collectives so that the CPU client can run cross-process computations."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec is None:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            raise CrlDistillError(f"--distributed: {str(e).splitlines()[0]} (give --coordinator, "
                                  f"--num-processes and --process-id)") from None
        return
    _check_reachable(spec)
    jax.distributed.initialize(spec.coordinator, spec.num_processes, spec.process_id,
                               initialization_timeout=spec.timeout_s)
