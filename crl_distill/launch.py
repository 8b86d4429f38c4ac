"""Start N local processes of one command as one distributed run (for tests and laptops).

    python -m crl_distill.launch -n 2 -- crl-distill teacher --distributed --out runs/x ...

Each child gets CRL_DISTILL_COORDINATOR (127.0.0.1 and a free port), CRL_DISTILL_NUM_PROCESSES
and CRL_DISTILL_PROCESS_ID. When one child fails, the others are stopped; the exit code is the
first failure's (0 when all succeed). On real hosts run the command once per host instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from crl_distill.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], n: int, port: int | None = None, env: dict[str, str] | None = None
           ) -> int:
    """Run `command` as processes 0..n-1 (environment `env`, default ours); returns the first
    non-zero exit code, else 0."""
    coordinator = f"127.0.0.1:{port or free_port()}"
    base = os.environ if env is None else env
    procs = [subprocess.Popen(command, env={**base, ENV_COORDINATOR: coordinator,
                                            ENV_NUM_PROCESSES: str(n), ENV_PROCESS_ID: str(i)})
             for i in range(n)]

    def stop_all(*_):
        for p in procs:
            if p.poll() is None:
                p.kill()

    # A SIGTERM to the launcher (e.g. a job scheduler) must not leave orphans behind.
    signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(143)))
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            stop_all()
            for p in procs:
                p.wait()
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crl_distill.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--processes", type=int, default=2, help="processes to start [2]")
    parser.add_argument("--port", type=int, default=None, help="coordinator port [a free one]")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.processes < 1:
        print("error: give -n N >= 1 and a command after --", file=sys.stderr)
        sys.exit(2)
    sys.exit(launch(command, args.processes, args.port))


if __name__ == "__main__":
    main()
