#!/usr/bin/env bash
# CPU rehearsal of the GPU window: the device command, run verbatim in a venv shaped like the image.
#
#     bash benchmarks/gpu/rehearse.sh [PYTHON] [VENV]     (defaults: pyenv's 3.12, /tmp/rehearse-gpu)
#
# 1. a fresh venv with the image's versions where the registry has them: jax/jaxlib 0.11.2 and
#    numpy 2.5.2 are NOT on the registry this machine reaches (newest: 0.10.2 and 2.4.6), so the
#    nearest are used; onnx 1.23.1 and onnxruntime 1.30.0 as on the image; flax, optax, typer,
#    rich, matplotlib, pytest, setuptools at the registry's newest (the image's are not recorded);
#    plus the image's packages this project imports through them (scipy, etils, absl-py, chex,
#    equinox, einops, onnx-ir, ...);
# 2. every distribution the image does NOT have is uninstalled again (a dependency pulled in here,
#    importlib_resources say, would hide a wheel the device lacks);
# 3. benchmarks/gpu/device_command.txt runs as it will on the device, with SUITE_ARGS=--smoke and
#    OUT set: it installs .whl/*.whl with --no-index --no-deps, the project with --no-deps, prints
#    versions and runs the suite's smoke mode; its files land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-/root/.pyenv/versions/3.12.1/bin/python3.12}
VENV=${2:-/tmp/rehearse-gpu}
PYV=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q jax==0.10.2 jaxlib==0.10.2 numpy==2.4.6 flax optax onnx==1.23.1 \
    onnxruntime==1.30.0 typer rich matplotlib pytest setuptools wheel \
    scipy etils absl-py chex equinox einops onnx-ir huggingface-hub pillow protobuf packaging \
    sympy networkx xxhash treescope jaxtyping wadler-lindig toolz fsspec zipp
# strip what the image lacks (names from wheelhouse.py's IMAGE list)
extra=$(python -P - <<'EOF'
import importlib.metadata as md, sys
sys.path.insert(0, "benchmarks/gpu")
from wheelhouse import IMAGE, norm
print(" ".join(sorted({norm(d.metadata["Name"]) for d in md.distributions()} - IMAGE - {"crl-distill"})))
EOF
)
echo "not on the image, removed: ${extra:-none}"
[ -n "$extra" ] && python -m pip uninstall -q -y $extra
python benchmarks/gpu/wheelhouse.py --python-version "$PYV" >/dev/null || python benchmarks/gpu/wheelhouse.py --python-version "$PYV" --check-only
# a shared 2-core CPU compiles slowly: a larger budget than the device's 540 s
export OUT=${OUT:-/tmp/rehearse-out} SUITE_ARGS=${SUITE_ARGS:---smoke} JAX_PLATFORMS=cpu BUDGET_S=${BUDGET_S:-1500}
rm -rf "$OUT" && mkdir -p "$OUT"
t0=$(date +%s)
bash -c "$(cat benchmarks/gpu/device_command.txt)"
echo "device command: rc $? in $(( $(date +%s) - t0 )) s; files in $OUT:"; ls -la "$OUT"
# 4. the smoke mode imports none of the wheels (pointmaze_u is pure JAX): step ant (brax) and
#    ant:backend=mjx (mujoco, mjx), open the tensorboard logger, export with jax2onnx
python benchmarks/gpu/probe_imports.py
# 5. the device command's fallback where `pip install -e .` fails (setuptools < 77 on the image):
#    the symlinked package tree on a .pth, outside the repo
python -m pip uninstall -q -y crl-distill
frag=$(grep -o 'S=/tmp/crl_src.*crl_src.pth;' benchmarks/gpu/device_command.txt)
rm -rf /tmp/crl_src && bash -c "$frag"
(cd /tmp && python -P -c "import crl_distill.teacher.crl as m, os; print('fallback tree:', m.__file__, '->', os.path.realpath(m.__file__))")
