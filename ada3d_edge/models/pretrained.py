"""Import pytorchvideo hub and PySlowFast checkpoints into our backbones.

Per-source key filters rename foreign keys to ours (timm style); missing, unexpected and mis-shaped
keys are listed in one error. Files are read with `torch.load(weights_only=True)`: no pickled code.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Union

import torch
import torch.nn as nn

from .backbone import Backbone, is_config_bn_key

_BLOCK_PARTS = {"conv_a": "conv_a", "norm_a": "bn_a", "conv_b": "conv_b", "norm_b": "bn_b",
                "conv_c": "conv_c", "norm_c": "bn_c"}
_SLOWFAST_PARTS = {"a": "conv_a", "a_bn": "bn_a", "b": "conv_b", "b_bn": "bn_b", "c": "conv_c", "c_bn": "bn_c"}


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint does not fit the model; lists every offending key."""


def _strip_prefixes(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def from_pytorchvideo(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """pytorchvideo hub keys (`blocks.0.conv`, `blocks.N.res_blocks.J.branch2.conv_a`, `blocks.H.proj`).

    The stage blocks are the `blocks.N` holding `res_blocks`, in order (for I3D the pool after res2 is a
    block of its own, so they are 1, 3, 4, 5); the head is the block holding `proj`.
    """
    stage_ids = sorted({int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.res_blocks\.", k)] if m})
    stage_of = {b: i for i, b in enumerate(stage_ids)}
    out: Dict[str, torch.Tensor] = {}
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


def from_pyslowfast(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """PySlowFast keys (`s1.pathway0_stem.conv`, `s2.pathway0_res0.branch2.a_bn`, `head.projection`)."""
    out: Dict[str, torch.Tensor] = {}
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


KEY_FILTERS: Dict[str, Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = {
    "pytorchvideo": from_pytorchvideo,
    "pyslowfast": from_pyslowfast,
    "native": lambda s: s,
}


def detect_source(state: Dict[str, torch.Tensor]) -> str:
    keys = list(state)
    if any(k.startswith("blocks.0.") for k in keys):
        return "pytorchvideo"
    if any(k.startswith("s1.pathway0_stem") for k in keys):
        return "pyslowfast"
    return "native"


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (`model_state`, `state_dict`, `model` or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or pickled objects beyond tensors
        raise ValueError(f"cannot read checkpoint {path} with weights_only=True: {e}") from e
    if isinstance(ckpt, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} holds no state dict (looked for 'model_state', 'state_dict', 'model')")
    return _strip_prefixes(dict(ckpt))


def _list(title: str, keys: List[str], limit: int = 20) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n  {title} ({len(keys)}): " + ", ".join(keys[:limit]) + more


def load_pretrained(model: nn.Module, path: Union[str, Path], source: str = "auto",
                    reset_head: bool = False) -> Dict[str, List[str]]:
    """Load a pytorchvideo / PySlowFast / native checkpoint into a `Backbone` (or an `Ada3D`'s backbone).

    Args:
        source: "auto", "pytorchvideo", "pyslowfast" or "native".
        reset_head: when the checkpoint's head has another class count, keep this model's freshly
            initialised head instead of failing.
    Returns the keys that were skipped (`{"reset_head": [...]}`).
    Raises:
        CheckpointMismatchError listing missing, unexpected and mis-shaped keys.
    """
    backbone = model.backbone if hasattr(model, "backbone") else model
    if not isinstance(backbone, Backbone):
        raise TypeError(f"load_pretrained needs a Backbone or Ada3D, got {type(model).__name__}")
    state = read_state_dict(path)
    src = detect_source(state) if source == "auto" else source
    if src not in KEY_FILTERS:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: auto, {', '.join(KEY_FILTERS)}")
    # per-configuration BN statistics belong to the configuration set they were measured for; imported
    # weights start uncalibrated (training measures them again)
    state = {k: v for k, v in KEY_FILTERS[src](state).items() if not is_config_bn_key(k)}
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
    if missing or unexpected or misshaped:
        hint = ""
        if any(k.startswith("head.proj.") for k in misshaped):
            hint = "\nThe head's class count differs: pass reset_head=True (CLI: --reset-head) to re-initialise it."
        raise CheckpointMismatchError(
            f"checkpoint {path} ({src} keys) does not fit {backbone.spec.name}:"
            + (_list("missing", missing) if missing else "")
            + (_list("unexpected", unexpected) if unexpected else "")
            + (_list("shape mismatch", misshaped) if misshaped else "") + hint)
    backbone.load_state_dict(state, strict=False)
    return {"reset_head": skipped}
