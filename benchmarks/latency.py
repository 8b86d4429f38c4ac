"""Latency table: ONNX student, JAX student, JAX/ONNX teacher, and a depth-1000 teacher.

    python benchmarks/latency.py --student STUDENT_DIR_OR_ONNX [--teacher RUN_DIR]
        [--deep-depth 1000] [--no-onnx-deep] [--out benchmarks/results/latency.json]

All rows are measured in one process, one thread (XLA_FLAGS set before JAX loads); targets on a
2-core CPU: ONNX student p50 <= 30 us, p99 <= 100 us, and >= 100x below the depth-1000 teacher.
Writes the JSON and a PNG beside it. Same as `crl-distill bench`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from crl_distill.timing import single_thread_xla_flags  # noqa: E402

single_thread_xla_flags()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--student", required=True)
    p.add_argument("--teacher", default=None)
    p.add_argument("--deep-depth", type=int, default=1000)
    p.add_argument("--no-onnx-deep", action="store_true")
    p.add_argument("--out", default="benchmarks/results/latency.json")
    args = p.parse_args()
    from _common import machine_info, write_json

    from crl_distill.export.latency import plot_latency, print_latency_table, run_latency_benchmark

    result = run_latency_benchmark(args.student, args.teacher, deep_depth=args.deep_depth,
                                   onnx_deep=not args.no_onnx_deep)
    print_latency_table(result)
    out = write_json(args.out, {"machine": machine_info(), **result})
    print(f"wrote {plot_latency(result, out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
