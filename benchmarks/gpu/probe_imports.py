"""Touch every code path that needs a wheel from /.whl/, in a venv shaped like the GPU image.

    python benchmarks/gpu/probe_imports.py

The suite's smoke mode runs on pointmaze_u (pure JAX), which imports none of the wheels; this
steps `ant` (brax), `ant:backend=mjx` (mujoco + mujoco-mjx), opens a tensorboard logger
(tensorboardX) and exports a tiny function with jax2onnx, then prints which distributions the
process imported and exits 1 if one of them is neither a wheel nor on the image (wheelhouse.py's
lists), so the rehearsal proves the wheel list is complete for these paths.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> int:
    import jax
    import jax.numpy as jnp

    from crl_distill.envs import make
    from crl_distill.loggers import make_logger

    for spec in ("ant", "ant:backend=mjx"):
        env = make(spec)
        s = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 2))
        s = jax.jit(jax.vmap(env.step), compiler_options=env.jit_options)(s, jnp.zeros((2, env.action_size)))
        print(f"{spec}: stepped, obs {s.obs.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        make_logger("tensorboard", Path(tmp), {}).close()
    print("tensorboard logger: ok")
    from jax2onnx import to_onnx

    to_onnx(jnp.tanh, [jax.ShapeDtypeStruct((2, 3), jnp.float32)])
    print("jax2onnx: ok")

    from wheelhouse import IMAGE, WHEELS, norm

    dists = md.packages_distributions()
    used = {norm(d) for m in {m.split(".")[0] for m in sys.modules} for d in dists.get(m, [])}
    known = IMAGE | {norm(n) for n in WHEELS} | {"crl-distill"}
    print("imported distributions:", " ".join(sorted(used)))
    unknown = used - known
    if unknown:
        print("NOT on the image nor in the wheelhouse:", " ".join(sorted(unknown)))
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
