"""Import teachers saved by the public reference code (scaling-crl and JaxGCRL).

Both save `pickle.dumps((alpha_params, actor_params, critic_params))` with flax linen variable
dicts whose layers are auto-numbered in call order (`Dense_0`, `LayerNorm_0`, ...):

    scaling-crl  input Dense+LayerNorm+swish, then blocks of 4 x (Dense, LayerNorm, swish) with a
                 skip around each block, then the output Dense(s). LayerNorm always present.
    JaxGCRL      n x (Dense, [LayerNorm], act); with skip k > 0, `skip` is taken after layer 0 and
                 added back after every layer i > 0 with i % k == 0; then the output Dense(s).

With k == 4 the two are the same function, and both equal our ResidualMLP. The actor has two
output Dense layers (mean, then log_std), which we fuse into one [width, 2A] output Dense.
Pickles run code on load, so they are read with an allow-list unpickler.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from crl_distill.envs import make
from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.teacher.config import NetConfig, TeacherConfig
from crl_distill.teacher.crl import CRL, Carry
from crl_distill.teacher.run_dir import package_versions, write_imported

FORMATS = ("auto", "scaling-crl", "jaxgcrl")


# ----------------------------------------------------------------------------------------------
# Restricted unpickling
# ----------------------------------------------------------------------------------------------
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar
    return scalar


def _jax_array_as_numpy(fun: Any, args: Any, arr_state: Any, aval_state: Any = None) -> np.ndarray:
    """Stand-in for jax's array reconstructor: rebuild the numpy value, create no device array.

    `fun` comes from the same pickle and was itself allow-listed (numpy's _reconstruct).
    """
    if fun is not _numpy_reconstruct():
        raise CrlDistillError("refusing to unpickle a jax array built by an unexpected function")
    value = fun(*args)
    value.__setstate__(arr_state)
    return np.asarray(value)


def _frozen_dict(*args: Any, **kwargs: Any) -> dict:
    return dict(*args, **kwargs)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "float"): float,
    ("builtins", "int"): int,
    ("collections", "OrderedDict"): dict,
    ("_codecs", "encode"): lambda s, enc="latin1": s.encode(enc),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): None,  # filled lazily (numpy 1/2 paths)
    ("numpy._core.multiarray", "_reconstruct"): None,
    ("numpy.core.multiarray", "scalar"): None,
    ("numpy._core.multiarray", "scalar"): None,
    ("jax._src.array", "_reconstruct_array"): _jax_array_as_numpy,
    ("flax.core.frozen_dict", "FrozenDict"): _frozen_dict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, tuples, numpy arrays, FrozenDicts and jax arrays; refuses the rest."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise CrlDistillError(f"refusing to unpickle {module}.{name}: not a class a "
                                  f"reference checkpoint needs")
        obj = _ALLOWED[(module, name)]
        if obj is None:
            obj = _numpy_reconstruct() if name == "_reconstruct" else _numpy_scalar()
        return obj


def safe_load_pickle(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CrlDistillError(f"{p}: no such file")
    try:
        return RestrictedUnpickler(io.BytesIO(p.read_bytes())).load()
    except CrlDistillError:
        raise
    except Exception as e:
        raise CrlDistillError(f"{p}: not a readable pickle ({type(e).__name__}: "
                              f"{str(e)[:120]})") from None


# ----------------------------------------------------------------------------------------------
# Layout inference and conversion
# ----------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """What a linen tree of auto-numbered layers holds."""

    n_hidden: int  # hidden Dense layers (the input layer included)
    width: int
    layer_norm: bool
    in_dim: int
    out_dims: list[int]  # output Dense widths (one for encoders, two for the actor)


def _variables(tree: Any, what: str) -> dict:
    if isinstance(tree, dict) and "params" in tree and isinstance(tree["params"], dict):
        tree = tree["params"]
    if not isinstance(tree, dict):
        raise CrlDistillError(f"{what}: expected a flax variable dict, got {type(tree).__name__}")
    return tree


def infer_layout(tree: Any, n_outputs: int, what: str) -> Layout:
    """Count Dense_i / LayerNorm_i; the last `n_outputs` Dense layers are the heads."""
    params = _variables(tree, what)
    dense, norms, other = {}, {}, []
    for k, v in params.items():
        m = re.fullmatch(r"(Dense|LayerNorm)_(\d+)", k)
        if not m:
            other.append(k)
            continue
        (dense if m[1] == "Dense" else norms)[int(m[2])] = v
    if other:
        raise CrlDistillError(f"{what}: unexpected layers {sorted(other)[:5]} (neither a "
                              f"scaling-crl nor a JaxGCRL layout)")
    n_dense = len(dense)
    if sorted(dense) != list(range(n_dense)) or n_dense < n_outputs + 1:
        raise CrlDistillError(f"{what}: Dense layers are not numbered 0..n-1 with at least "
                              f"{n_outputs + 1} of them")
    n_hidden = n_dense - n_outputs
    if norms and sorted(norms) != list(range(n_hidden)):
        raise CrlDistillError(f"{what}: {len(norms)} LayerNorms for {n_hidden} hidden Dense layers "
                              f"(expected one per hidden layer or none)")
    for i, d in dense.items():
        if set(d) != {"kernel", "bias"} or np.ndim(d["kernel"]) != 2:
            raise CrlDistillError(f"{what}: Dense_{i} is not a kernel/bias pair")
    width = np.shape(dense[0]["kernel"])[1]
    for i in range(n_hidden):
        k = np.shape(dense[i]["kernel"])
        if k[1] != width or (i > 0 and k[0] != width):
            raise CrlDistillError(f"{what}: Dense_{i} has shape {list(k)}; hidden layers must all "
                                  f"have width {width}")
    return Layout(n_hidden=n_hidden, width=width, layer_norm=bool(norms),
                  in_dim=int(np.shape(dense[0]["kernel"])[0]),
                  out_dims=[int(np.shape(dense[n_hidden + j]["kernel"])[1])
                            for j in range(n_outputs)])


def net_config(layout: Layout, fmt: str, skip: int, activation: str):
    """Our NetConfig for a reference network; refuses skip patterns we cannot express."""
    depth = layout.n_hidden - 1
    if fmt == "scaling-crl":
        if not layout.layer_norm or depth % 4:
            raise CrlDistillError(f"not a scaling-crl network: {layout.n_hidden} hidden layers "
                                  f"(need 1 + a multiple of 4, each with LayerNorm)")
        skip = 4
    if skip > depth:  # JaxGCRL adds the skip at layers k, 2k, ...: none exist below k + 1
        skip = 0
    if skip and depth % skip:
        raise CrlDistillError(f"JaxGCRL skip every {skip} layers with {layout.n_hidden} hidden "
                              f"layers leaves {depth % skip} trailing layers without a skip; "
                              f"this pattern is not supported")
    return NetConfig(depth=depth, width=layout.width, layer_norm=layout.layer_norm,
                     residual=bool(skip), activation=activation,
                     layers_per_block=skip if skip else 1)


def convert_net(tree: Any, layout: Layout, cfg: Any, fuse_heads: bool) -> dict:
    """Reference variables -> ResidualMLP params {"input", "input_norm", "blocks", "output"}."""
    p = _variables(tree, "network")
    f32 = lambda x: np.asarray(x, np.float32)
    out: dict[str, Any] = {"input": {k: f32(v) for k, v in p["Dense_0"].items()}}
    if layout.layer_norm:
        out["input_norm"] = {k: f32(v) for k, v in p["LayerNorm_0"].items()}
    n_blocks, per = cfg.depth // cfg.layers_per_block, cfg.layers_per_block
    if n_blocks:
        blocks: dict[str, Any] = {}
        for j in range(per):
            idx = [1 + b * per + j for b in range(n_blocks)]
            blocks[f"dense_{j}"] = {k: np.stack([f32(p[f"Dense_{i}"][k]) for i in idx])
                                    for k in ("kernel", "bias")}
            if layout.layer_norm:
                blocks[f"norm_{j}"] = {k: np.stack([f32(p[f"LayerNorm_{i}"][k]) for i in idx])
                                       for k in ("scale", "bias")}
        out["blocks"] = blocks
    heads = [p[f"Dense_{layout.n_hidden + j}"] for j in range(len(layout.out_dims))]
    if fuse_heads:  # actor: mean head then log_std head -> one [width, 2A] Dense
        out["output"] = {k: np.concatenate([f32(h[k]) for h in heads], axis=-1)
                         for k in ("kernel", "bias")}
    else:
        out["output"] = {k: f32(heads[0][k]) for k in ("kernel", "bias")}
    return out


def detect_format(layouts: list[Layout]) -> str:
    """scaling-crl when every net has LayerNorm and 1 + 4k hidden layers, else JaxGCRL."""
    if all(lay.layer_norm and (lay.n_hidden - 1) % 4 == 0 for lay in layouts):
        return "scaling-crl"
    return "jaxgcrl"


def import_reference(path: str | Path, env: str, out: str | Path, fmt: str = "auto",
                     skip_connections: int = 4, activation: str = "swish",
                     energy: str = "l2") -> Path:
    """Convert a reference .pkl into a crl-distill teacher run directory at `out`."""
    require_choice("format", fmt, FORMATS)
    target_env = make(env)
    obj = safe_load_pickle(path)
    if not (isinstance(obj, tuple | list) and len(obj) == 3):
        raise CrlDistillError(f"{path}: expected a pickled (alpha_params, actor_params, "
                              f"critic_params) tuple")
    alpha, actor_tree, critic = obj
    if not isinstance(critic, dict) or not {"sa_encoder", "g_encoder"} <= set(critic):
        raise CrlDistillError(f"{path}: critic params lack 'sa_encoder' / 'g_encoder'")
    la = infer_layout(actor_tree, 2, "actor")
    lsa = infer_layout(critic["sa_encoder"], 1, "sa_encoder")
    lg = infer_layout(critic["g_encoder"], 1, "g_encoder")
    if fmt == "auto":
        fmt = detect_format([la, lsa, lg])
    e = target_env
    if e.reference_state_size is not None and la.in_dim == e.reference_state_size + e.goal_size:
        raise CrlDistillError(f"{path}: a reference {e.name} checkpoint observes the reference's "
                              f"{e.reference_state_size}-dim state, which carries the commanded "
                              f"target (a goal leak); crl-distill's {e.name} state is "
                              f"{e.state_size}-dim without it, so the networks cannot be mapped")
    checks = [("actor input", la.in_dim, e.observation_size, "observation (state + goal)"),
              ("actor output", la.out_dims[0], e.action_size, "action"),
              ("sa_encoder input", lsa.in_dim, e.state_size + e.action_size, "state + action"),
              ("g_encoder input", lg.in_dim, e.goal_size, "goal")]
    for what, got, want, name in checks:
        if got != want:
            raise CrlDistillError(f"env mismatch: the checkpoint's {what} has size {got} but "
                                  f"{env!r} has {name} size {want}")
    if lsa.out_dims[0] != lg.out_dims[0] or la.out_dims[0] != la.out_dims[1]:
        raise CrlDistillError("encoders disagree on the representation size, or the actor's "
                              "mean and log_std heads differ")
    a_cfg = net_config(la, fmt, skip_connections, activation)
    c_cfg = net_config(lsa, fmt, skip_connections, activation)
    if net_config(lg, fmt, skip_connections, activation) != c_cfg:
        raise CrlDistillError("sa_encoder and g_encoder have different architectures; "
                              "crl-distill teachers share one critic architecture")
    cfg = TeacherConfig(env=env, actor=a_cfg, critic=c_cfg, repr_dim=lsa.out_dims[0],
                        energy=energy)
    params = {
        "actor": {"params": {"net": convert_net(actor_tree, la, a_cfg, fuse_heads=True)}},
        "critic": {"phi": {"params": convert_net(critic["sa_encoder"], lsa, c_cfg, False)},
                   "psi": {"params": convert_net(critic["g_encoder"], lg, c_cfg, False)}},
    }
    # The converted tree must have exactly the shapes our networks expect.
    crl = CRL(cfg, target_env)
    want = jax.eval_shape(crl.init_train_state, jax.random.PRNGKey(0))
    for name, ours, ref in (("actor", params["actor"], want.actor),
                            ("critic", params["critic"], want.critic)):
        got_s = jax.tree_util.tree_map(np.shape, ours)
        want_s = jax.tree_util.tree_map(lambda x: tuple(x.shape), ref)
        if got_s != want_s:
            raise CrlDistillError(f"internal: converted {name} does not match the network")
    log_alpha = np.asarray(_variables(alpha, "alpha").get("log_alpha", 0.0)
                           if isinstance(alpha, dict) else 0.0, np.float32)
    ts = jax.tree_util.tree_map(lambda _: None, want).replace(
        actor=params["actor"], critic=params["critic"], log_alpha=log_alpha)
    return write_imported(
        Path(out),
        {"teacher": cfg.to_dict(), "env": target_env.describe(), "versions": package_versions(),
         "imported_from": {"path": str(Path(path).resolve()), "format": fmt,
                           "skip_connections": skip_connections, "activation": activation}},
        Carry(train=ts, replay=None, env_state=None, episode=None, key=None), cfg,
        imported_from=str(path), reference_format=fmt)
