"""Download the wheels the GPU machine's image lacks into /.whl/ (git-ignored) and check their size.

    python benchmarks/gpu/wheelhouse.py [--dest .whl] [--python-version 3.12] [--check-only]

The borrowed GPU machine (one H200/H100, Python 3.12) reaches no package registry, and its image
already holds jax 0.11.2 + the CUDA 13 plugin, flax, optax, numpy, onnx, onnxruntime, typer,
rich, matplotlib, pytest, scipy, etils, absl-py, chex, equinox, einops, onnx-ir, ... (the list
below, IMAGE, copied from the device notes). What this project imports that is missing there
travels as wheels, installed there with `pip install --no-index --no-deps` (device_command.txt).

Which wheels: every distribution this project's code paths import (training on brax and mjx
envs, the tensorboard logger, the ONNX export; found by importing them and mapping
`sys.modules` to distributions) that IMAGE lacks. Declared requirements that nothing on those
paths imports are left out on purpose (NOT_IMPORTED, with the reason), which keeps the wheelhouse
small; the CPU rehearsal (rehearse.sh) proves the set suffices by running the suite's smoke mode
in a venv with only the image's packages plus these wheels. `--no-deps` everywhere: one pinned
version of each, so the install there never tries to resolve.

The pins are the versions this repo's CI venv runs (jax 0.10.2 there); --python-version 3.11
fetches cp311 builds for a rehearsal on a machine without 3.12. The total is checked against the
64 MiB a device call may carry, minus the working tree that travels with it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: the missing distributions, pinned; each one's reason in a comment
WHEELS = {
    "brax": "0.14.2",            # the envs (ant, humanoid, mazes)
    "mujoco": "4.0.0",           # brax's model loading; mjx; native sim-to-sim
    "mujoco-core": "4.0.0",      # mujoco 4 splits its C engine into this wheel (== pin)
    "mujoco-mjx": "3.17.0",      # brax's mjx pipeline, the arm envs, backend=mjx
    "glfw": "2.11.0",            # imported by `import mujoco`
    "trimesh": "5.2.0",         # imported by brax.io.mjcf and mujoco-mjx
    "tensorboardX": "2.6.5",     # the default live logger
    "jax2onnx": "0.17.1",        # the ONNX export
    "dm-pix": "0.4.5",           # imported by jax2onnx's plugins
}

#: declared requirements of the wheels above that no code path of this project imports
NOT_IMPORTED = {
    "flask": "brax's web viewer only",
    "flask-cors": "brax's web viewer only",
    "jaxopt": "brax's training agents only (we train with our own CRL)",
    "ml-collections": "brax's training agents only",
    "pyopengl": "mujoco's OpenGL rendering only (MUJOCO_GL)",
    "mujoco-studio": "mujoco 4's renderer and viewer (12 MiB); `import mujoco` tries it and goes on",
    "websockets": "mujoco-studio's viewer server only",
    "netron": "jax2onnx's graph viewer only",
    "orbax-export": "jax2onnx's orbax bridge only",
    "dataclasses": "python < 3.7 only",
}

#: the image's packages (device notes, KINDS.md, read 2026-11-17), normalised names
_IMAGE_LIST = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
IMAGE = frozenset(_IMAGE_LIST.split())

CARRY_LIMIT = 64 * 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return name.lower().replace("_", "-").replace(".", "-")


def download(dest: Path, python_version: str) -> None:
    """`pip download --no-deps` of every pin for cpXY manylinux x86_64 into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", *plats, "-d", str(dest),
           *(f"{n}=={v}" for n, v in WHEELS.items())]
    subprocess.run(cmd, check=True)


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalised name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return norm(name), version


def requirements(path: Path) -> list[str]:
    """The wheel's unconditional Requires-Dist names (extras and old-python markers skipped)."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    out = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req:
            continue
        name = req.split(";")[0].split("[")[0].split("(")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        out.append(norm(name))
    return out


def tree_bytes() -> int:
    """Bytes of what a device call sends besides carry: tracked + untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def check(dest: Path, python_version: str) -> int:
    """Print the wheel table, unmet requirements and the carry budget; return an exit code."""
    tag = "cp" + python_version.replace(".", "")
    wheels = sorted(dest.glob("*.whl"))
    found = {}
    problems = []
    for w in wheels:
        name, version = wheel_name(w)
        if name not in {norm(n) for n in WHEELS}:
            problems.append(f"{w.name}: not in the pinned list (remove it: two versions stop the install)")
        elif name in found:
            problems.append(f"{name}: two wheels ({found[name].name}, {w.name})")
        found[name] = w
        if "-cp" in w.name and f"-{tag}-" not in w.name:
            problems.append(f"{w.name}: not a {tag} build")
    for n, v in WHEELS.items():
        w = found.get(norm(n))
        if w is None:
            problems.append(f"{n}=={v}: missing")
        elif wheel_name(w)[1] != v:
            problems.append(f"{n}: have {wheel_name(w)[1]}, pinned {v}")
    have = IMAGE | set(found)
    for w in wheels:
        name = wheel_name(w)[0]
        for req in requirements(w):
            if req not in have and req not in NOT_IMPORTED:
                problems.append(f"{name} requires {req}: neither in the image nor in the wheelhouse")
    total = sum(w.stat().st_size for w in wheels)
    tree = tree_bytes()
    print(f"{'wheel':<70} {'MiB':>6}")
    for w in wheels:
        print(f"{w.name:<70} {w.stat().st_size / 2**20:6.2f}")
    print(f"{'total (' + str(len(wheels)) + ' wheels)':<70} {total / 2**20:6.2f}")
    print(f"working tree that travels: {tree / 2**20:.2f} MiB; wheels + tree = "
          f"{(total + tree) / 2**20:.2f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB")
    print("left out on purpose (declared, never imported here): "
          + ", ".join(f"{k} ({v})" for k, v in NOT_IMPORTED.items()))
    if total + tree > CARRY_LIMIT:
        problems.append(f"wheels + tree {(total + tree) / 2**20:.1f} MiB exceed the 64 MiB carry limit")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dest", default=str(ROOT / ".whl"))
    p.add_argument("--python-version", default="3.12", help="the image's: 3.12")
    p.add_argument("--check-only", action="store_true", help="no download; check what is there")
    a = p.parse_args(argv)
    dest = Path(a.dest)
    if not a.check_only:
        download(dest, a.python_version)
    sys.exit(check(dest, a.python_version))


if __name__ == "__main__":
    main()
