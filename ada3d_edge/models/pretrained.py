"""Import pytorchvideo hub, PySlowFast and mmaction2 checkpoints into our backbones.

Each checkpoint scheme is a spec in `SCHEMES`: how to recognise it, a key filter that renames its keys
to ours (timm style) and a check of what the weights cannot show (temporal pooling; mmaction2's
temporal strides), from the key numbering or the config the file carries. Missing, unexpected and
mis-shaped keys, temporal kernels that differ from the arch's and config settings we do not build are
listed in one error.
Files are read with `torch.load(weights_only=True)`; besides tensors only numpy scalars, arrays and
dtypes (found in training metadata) are allowed, anything else is refused by name, unread.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from . import mmaction
from .backbone import Backbone, is_config_bn_key
from .specs import BackboneSpec, get_spec, list_archs

StateDict = Dict[str, Any]
_BLOCK_PARTS = {"conv_a": "conv_a", "norm_a": "bn_a", "conv_b": "conv_b", "norm_b": "bn_b",
                "conv_c": "conv_c", "norm_c": "bn_c"}
_SLOWFAST_PARTS = {"a": "conv_a", "a_bn": "bn_a", "b": "conv_b", "b_bn": "bn_b", "c": "conv_c", "c_bn": "bn_c"}


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint does not fit the model; lists every offending key."""


def _strip_prefixes(state: StateDict) -> StateDict:
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def from_pytorchvideo(state: StateDict) -> StateDict:
    """pytorchvideo hub keys (`blocks.0.conv`, `blocks.N.res_blocks.J.branch2.conv_a`, `blocks.H.proj`).

    The stage blocks are the `blocks.N` holding `res_blocks`, in order (for I3D the pool after res2 is a
    block of its own, so they are 1, 3, 4, 5); the head is the block holding `proj`.
    """
    stage_ids = sorted({int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.res_blocks\.", k)] if m})
    stage_of = {b: i for i, b in enumerate(stage_ids)}
    out: StateDict = {}
    for k, v in state.items():
        m = re.match(r"blocks\.0\.(conv|norm)\.(.+)$", k)
        if m:
            out[f"stem.{'conv' if m.group(1) == 'conv' else 'bn'}.{m.group(2)}"] = v
            continue
        m = re.match(r"blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)$", k)
        if m:
            stage, block, rest = stage_of[int(m.group(1))], m.group(2), m.group(3)
            base = f"stages.{stage}.blocks.{block}."
            r = re.match(r"branch1_(conv|norm)\.(.+)$", rest)
            if r:
                out[base + f"shortcut.{'conv' if r.group(1) == 'conv' else 'bn'}.{r.group(2)}"] = v
                continue
            r = re.match(r"branch2\.(\w+?)\.(.+)$", rest)
            if r and r.group(1) in _BLOCK_PARTS:
                out[base + f"{_BLOCK_PARTS[r.group(1)]}.{r.group(2)}"] = v
                continue
        m = re.match(r"blocks\.\d+\.proj\.(.+)$", k)
        if m:
            out[f"head.proj.{m.group(1)}"] = v
            continue
        out[k] = v  # left as is: reported as unexpected
    return out


def from_pyslowfast(state: StateDict) -> StateDict:
    """PySlowFast keys (`s1.pathway0_stem.conv`, `s2.pathway0_res0.branch2.a_bn`, `head.projection`)."""
    out: StateDict = {}
    for k, v in state.items():
        m = re.match(r"s1\.pathway0_stem\.(conv|bn)\.(.+)$", k)
        if m:
            out[f"stem.{m.group(1)}.{m.group(2)}"] = v
            continue
        m = re.match(r"s(\d)\.pathway0_res(\d+)\.(.+)$", k)
        if m:
            base = f"stages.{int(m.group(1)) - 2}.blocks.{m.group(2)}."
            rest = m.group(3)
            r = re.match(r"branch1(_bn)?\.(.+)$", rest)
            if r:
                out[base + ("shortcut.bn." if r.group(1) else "shortcut.conv.") + r.group(2)] = v
                continue
            r = re.match(r"branch2\.(\w+?)\.(.+)$", rest)
            if r and r.group(1) in _SLOWFAST_PARTS:
                out[base + f"{_SLOWFAST_PARTS[r.group(1)]}.{r.group(2)}"] = v
                continue
        m = re.match(r"head\.projection\.(.+)$", k)
        if m:
            out[f"head.proj.{m.group(1)}"] = v
            continue
        out[k] = v
    return out


ConfigCheck = Callable[[Any, BackboneSpec, bool], Tuple[List[str], List[str]]]


@dataclass(frozen=True)
class Scheme:
    """A checkpoint key scheme. `rename` only looks at keys (values pass through untouched);
    `short_name` names a file key in messages; `check(ckpt, spec, ignore_temporal_strides)` returns
    (problems, notes) about what the weights cannot show."""

    name: str
    detect: Callable[[List[str]], bool]
    rename: Callable[[StateDict], StateDict]
    short_name: Callable[[str], str] = lambda k: re.sub(r"\.weight$", "", k)
    check: Optional[ConfigCheck] = None


def _pool_mismatch(pooled: bool, what: str, spec: BackboneSpec) -> List[str]:
    if pooled == spec.temporal_pool:
        return []
    fix = str(pooled).lower()
    return [f"{what}: {'a' if pooled else 'no'} temporal max-pool (2,1,1) after res2, but {spec.name} is "
            f"built with temporal_pool={spec.temporal_pool}; set model.backbone.temporal_pool: {fix} in the recipe"]


def _check_pytorchvideo(ckpt: Any, spec: BackboneSpec, _ignore_strides: bool) -> Tuple[List[str], List[str]]:
    """pytorchvideo's I3D holds its temporal pool as a block of its own (no weights): the stage blocks
    are then numbered 1, 3, 4, 5."""
    ids = sorted({int(m.group(1)) for k in state_dict_of(ckpt, "checkpoint")
                  for m in [re.match(r"blocks\.(\d+)\.res_blocks\.", k)] if m})
    pooled = len(ids) > 1 and ids[1] - ids[0] > 1
    return _pool_mismatch(pooled, f"stage blocks {ids}", spec), []


def _check_pyslowfast(ckpt: Any, spec: BackboneSpec, _ignore_strides: bool) -> Tuple[List[str], List[str]]:
    """PySlowFast's `i3d` and `c2d` pool (2,1,1) after res2 (its `_POOL1`), which no weight shows; its
    checkpoints hold the config as a YAML dump (`cfg`), read with yaml.safe_load."""
    import yaml

    text = ckpt.get("cfg") if isinstance(ckpt, dict) else None
    try:
        cfg = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        cfg = None
    arch = (cfg.get("MODEL") or {}).get("ARCH") if isinstance(cfg, dict) else None
    if not isinstance(arch, str):
        return [], ["the file holds no cfg naming MODEL.ARCH: its temporal pooling was not checked "
                    "(PySlowFast's i3d pools after res2)"]
    return _pool_mismatch(arch.lower() in ("i3d", "c2d"), f"MODEL.ARCH={arch}", spec), []


SCHEMES: Dict[str, Scheme] = {s.name: s for s in (
    Scheme("pytorchvideo", lambda keys: any(k.startswith("blocks.0.") for k in keys), from_pytorchvideo,
           check=_check_pytorchvideo),
    Scheme("pyslowfast", lambda keys: any(k.startswith("s1.pathway0_stem") for k in keys), from_pyslowfast,
           check=_check_pyslowfast),
    Scheme("mmaction2", mmaction.is_mmaction2, mmaction.from_mmaction2, mmaction.short_name,
           mmaction.check_config),
    Scheme("native", lambda keys: True, lambda s: s),
)}


def detect_source(state: StateDict) -> str:
    keys = list(state)
    return next(name for name, s in SCHEMES.items() if s.detect(keys))


def _plain_globals() -> List[Tuple[Any, str]]:
    """The globals allowed besides torch's own: numpy scalars, arrays and dtypes, under the names that
    numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) pickle them with."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: List[Tuple[Any, str]] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: a dtype's state is set on its class's instance
    allowed += [(c, f"numpy.dtypes.{n}") for n, c in vars(dtypes or object).items()
                if isinstance(c, type) and issubclass(c, np.dtype)]
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(core.multiarray.scalar, f"{prefix}.scalar"),
                    (core.multiarray._reconstruct, f"{prefix}._reconstruct")]
    return allowed


def _refused(path: Path, names: List[str]) -> ValueError:
    return ValueError(
        f"cannot read checkpoint {path} with weights_only=True: it holds objects that are not tensors or "
        f"plain data ({', '.join(names)}), which loading could run as code; keep only its weights "
        "(mmaction2's tools/deployment/publish_model.py keeps 'meta' and 'state_dict') and import that file")


def read_checkpoint_file(path: Union[str, Path]) -> Any:
    """The object in a checkpoint file, read with weights_only=True: tensors, plain Python data and
    numpy scalars/arrays; a file holding anything else is refused, naming what it holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    allowed = _plain_globals()
    try:  # scans the pickle's globals without running it (zip checkpoints, torch >= 1.6)
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy or corrupt file: the weights_only load below says what is wrong
        foreign = []
    refused = sorted(set(foreign) - {name for _, name in allowed})
    if refused:
        raise _refused(path, refused)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a legacy-format file holding objects beyond plain data
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if m:
            raise _refused(path, [m.group(1)]) from None
        raise ValueError(f"cannot read checkpoint {path} with weights_only=True: {_reason(e)}") from e


def _reason(e: Exception) -> str:
    """The line of a torch.load error that says what is wrong (not its advice to load unsafely)."""
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return (m.group(1) if m else text.strip().split("\n")[0] if text.strip() else type(e).__name__).strip()


def state_dict_of(ckpt: Any, path: Union[str, Path]) -> StateDict:
    """The tensors of a checkpoint (`model_state`, `state_dict`, `model` or a bare state dict)."""
    if isinstance(ckpt, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} holds no state dict (looked for 'model_state', 'state_dict', 'model')")
    return _strip_prefixes(dict(ckpt))


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """The tensors of a checkpoint file (`model_state`, `state_dict`, `model` or a bare state dict)."""
    return state_dict_of(read_checkpoint_file(path), path)


def expected_temporal_kernel(spec: BackboneSpec, key: str) -> Optional[int]:
    """The temporal kernel `spec` gives the conv weight `key` (ours), None when it has no such conv."""
    if key == "stem.conv.weight":
        return spec.stem_kernel_t
    m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(conv_[abc]|shortcut\.conv)\.weight$", key)
    if not m or int(m.group(1)) >= len(spec.stages) or int(m.group(2)) >= spec.stages[int(m.group(1))].depth:
        return None
    return spec.stages[int(m.group(1))].kernel(int(m.group(2))) if m.group(3) == "conv_a" else 1


def _archs_with_kernels(kts: Dict[str, int], depths: Tuple[int, ...]) -> List[str]:
    """Registered archs with these block counts whose temporal kernels are exactly `kts`."""
    names = []
    for arch in list_archs():
        spec = get_spec(arch)
        if tuple(s.depth for s in spec.stages) == depths and \
                all(expected_temporal_kernel(spec, k) == kt for k, kt in kts.items()):
            names.append(arch)
    return names


def _kernel_report(state: StateDict, own: StateDict, origin: Dict[str, str], scheme: Scheme,
                   spec: BackboneSpec) -> Tuple[List[str], str]:
    """Lines `layer3.1.conv1: file has kt=3, i3d_r50 expects 1` for conv weights whose temporal (or
    inflated) kernel differs, and a hint naming the archs whose kernels the file has."""
    lines, kts = [], {}
    for k, v in state.items():
        if k in own and v.dim() == 5 and own[k].dim() == 5:
            kts[k] = int(v.shape[2])
            if v.shape[2] != own[k].shape[2]:
                lines.append(f"{scheme.short_name(origin[k])}: file has kt={v.shape[2]}, "
                             f"{spec.name} expects {own[k].shape[2]}")
    if not lines:
        return [], ""
    blocks = [(int(m.group(1)), int(m.group(2))) for k in kts
              for m in [re.match(r"stages\.(\d+)\.blocks\.(\d+)\.conv_a\.", k)] if m]
    depths = tuple(1 + max([j for s, j in blocks if s == i], default=-1) for i in range(len(spec.stages)))
    archs = [a for a in _archs_with_kernels(kts, depths) if a != spec.name]
    hint = f"\nThe file's temporal kernels are those of {', '.join(archs)} (model.arch)." if archs else ""
    return lines, hint


def _list(title: str, keys: List[str], limit: int = 20, sep: str = ", ") -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n  {title} ({len(keys)}): " + sep.join(keys[:limit]) + more


def _lines(title: str, items: List[str]) -> str:
    return f"\n  {title} ({len(items)}):" + "".join(f"\n    - {i}" for i in items)


def load_pretrained(model: nn.Module, path: Union[str, Path], source: str = "auto",
                    reset_head: bool = False, ignore_temporal_strides: bool = False) -> Dict[str, Any]:
    """Load a pytorchvideo / PySlowFast / mmaction2 / native checkpoint into a `Backbone` (or an `Ada3D`'s).

    Args:
        source: "auto" or a name in `SCHEMES` ("pytorchvideo", "pyslowfast", "mmaction2", "native").
        reset_head: when the checkpoint's head has another class count, keep this model's freshly
            initialised head instead of failing.
        ignore_temporal_strides: load weights trained with temporal strides (mmaction2's I3D configs:
            `conv1_stride_t=2, pool1_stride_t=2`) although our backbones have none; the network then
            computes something else than the one they were trained in (a starting point to fine-tune).
    Returns `{"source": scheme, "reset_head": [skipped head keys], "notes": [what was not checked or
    was ignored]}`.
    Raises:
        CheckpointMismatchError listing missing, unexpected and mis-shaped keys, temporal kernels and
        config settings that do not fit.
    """
    backbone = model.backbone if hasattr(model, "backbone") else model
    if not isinstance(backbone, Backbone):
        raise TypeError(f"load_pretrained needs a Backbone or Ada3D, got {type(model).__name__}")
    ckpt = read_checkpoint_file(path)
    state = state_dict_of(ckpt, path)
    src = detect_source(state) if source == "auto" else source
    if src not in SCHEMES:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: auto, {', '.join(SCHEMES)}")
    scheme = SCHEMES[src]
    origin = scheme.rename({k: k for k in state})  # our key -> the file's key, for messages
    # per-configuration BN statistics belong to the configuration set they were measured for; imported
    # weights start uncalibrated (training measures them again)
    state = {k: v for k, v in scheme.rename(state).items() if not is_config_bn_key(k)}
    problems, notes = scheme.check(ckpt, backbone.spec, ignore_temporal_strides) if scheme.check else ([], [])
    own = backbone.state_dict()
    skipped: List[str] = []
    head_keys = [k for k in own if k.startswith("head.proj.")]
    if reset_head and any(k in state and state[k].shape != own[k].shape for k in head_keys):
        skipped = [k for k in head_keys if k in state]
        state = {k: v for k, v in state.items() if k not in head_keys}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")
               and not is_config_bn_key(k) and not (k in head_keys and skipped)]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in state if k in own and state[k].shape != own[k].shape]
    kernels, arch_hint = _kernel_report(state, own, origin, scheme, backbone.spec)
    if missing or unexpected or misshaped or problems:
        hint = arch_hint
        if any(k.startswith("head.proj.") for k in misshaped):
            hint += "\nThe head's class count differs: pass reset_head=True (CLI: --reset-head) to re-initialise it."
        raise CheckpointMismatchError(
            f"checkpoint {path} ({src} keys) does not fit {backbone.spec.name}:"
            + (_list("temporal kernels", kernels, sep="; ") if kernels else "")
            + (_lines("config", problems) if problems else "")
            + (_list("missing", missing) if missing else "")
            + (_list("unexpected", unexpected) if unexpected else "")
            + (_list("shape mismatch", misshaped) if misshaped else "") + hint)
    backbone.load_state_dict(state, strict=False)
    return {"source": src, "reset_head": skipped, "notes": notes}
