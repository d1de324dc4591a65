"""mmaction2 checkpoints (`ResNet3dSlowOnly` / `ResNet3d` + `I3DHead`): key renaming and config checks.

Layout (mmaction2 `models/backbones/resnet3d.py`, every conv an mmcv `ConvModule` holding `conv` and
`bn`): `backbone.conv1.{conv,bn}`, `backbone.layerN.M.conv{1,2,3}.{conv,bn}`,
`backbone.layerN.0.downsample.{conv,bn}`, `cls_head.fc_cls`. With `inflate_style='3x1x1'` an
inflated block's `conv1` is 3x1x1 and `conv2` 1x3x3: our bottleneck exactly.

What the weights cannot show (temporal strides, the temporal max-pool after `layer1`) is read from
the config text that mmengine writes into `meta['cfg']` (mmaction2 0.x: `meta['config']`), parsed as
literals with `ast`: nothing in the file is executed.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Dict, List, Optional, Tuple

from .specs import BackboneSpec

_PARTS = {"1": "a", "2": "b", "3": "c"}
_UNREAD = object()  # a config value that is not a literal (a variable, an expression)
# what our backbones are: no temporal stride anywhere, stem max-pool, strides on the 3x3 conv
_FIXED = {"with_pool1": True, "style": "pytorch", "inflate_style": "3x1x1",
          "spatial_strides": (1, 2, 2, 2), "dilations": (1, 1, 1, 1), "conv1_stride_s": 2,
          "pool1_stride_s": 2}
_TEMPORAL_STRIDES = {"conv1_stride_t": 1, "pool1_stride_t": 1, "temporal_strides": (1, 1, 1, 1)}
BACKBONE_TYPES = ("ResNet3d", "ResNet3dSlowOnly")


def is_mmaction2(keys: List[str]) -> bool:
    """A recognizer's keys: `backbone.*` and `cls_head.*` (any backbone: the config check names it)."""
    return any(k.startswith(("backbone.", "cls_head.")) for k in keys)


def from_mmaction2(state: Dict[str, Any]) -> Dict[str, Any]:
    """mmaction2 keys -> ours. `data_preprocessor.mean/std` (input normalisation, a recipe's
    `data.mean/std` here) are dropped; anything else unknown is kept as is, to be listed."""
    out: Dict[str, Any] = {}
    for k, v in state.items():
        m = re.match(r"backbone\.conv1\.(conv|bn)\.(.+)$", k)
        if m:
            out[f"stem.{m.group(1)}.{m.group(2)}"] = v
            continue
        m = re.match(r"backbone\.layer(\d)\.(\d+)\.(conv([123])|downsample)\.(conv|bn)\.(.+)$", k)
        if m:
            base = f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}."
            if m.group(3) == "downsample":
                out[base + f"shortcut.{m.group(5)}.{m.group(6)}"] = v
            else:
                out[base + f"{m.group(5)}_{_PARTS[m.group(4)]}.{m.group(6)}"] = v
            continue
        m = re.match(r"cls_head\.fc_cls\.(weight|bias)$", k)
        if m:
            out[f"head.proj.{m.group(1)}"] = v
            continue
        if re.match(r"data_preprocessor\.(mean|std)$", k):
            continue
        out[k] = v
    return out


def short_name(key: str) -> str:
    """`backbone.layer3.1.conv1.conv.weight` -> `layer3.1.conv1` (the name in mmaction2's modules)."""
    k = re.sub(r"^backbone\.", "", key)
    return re.sub(r"\.conv\.weight$|\.weight$", "", k)


def _literal(node: ast.AST) -> Any:
    """A config value: literals, tuples/lists/dicts of them and `dict(k=v, ...)` calls; else _UNREAD."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Name):  # new-style configs: `type=ResNet3d` (an imported class)
        return node.id
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _UNREAD


def _merge(base: Any, override: Any) -> Any:
    """mmcv's Config merge: dicts merge key by key unless the override says `_delete_=True`."""
    if not isinstance(override, dict):
        return override
    own = {k: v for k, v in override.items() if k != "_delete_"}
    if not isinstance(base, dict) or override.get("_delete_"):
        return own
    return {**base, **{k: _merge(base.get(k), v) for k, v in own.items()}}


def read_backbone_config(meta: Any) -> Optional[Dict[str, Any]]:
    """The `model.backbone` dict of the config text in a checkpoint's meta; None when there is none.

    mmengine writes the merged config (`meta['cfg']`); mmaction2 0.x wrote `cfg.text` (`meta['config']`):
    each file of the `_base_` chain after a line holding its path, bases first, merged here as mmcv did.
    """
    if not isinstance(meta, dict):
        return None
    text = meta.get("cfg", meta.get("config"))
    if not isinstance(text, str):
        return None
    model: Any = None
    for chunk in re.split(r"(?m)^\S+\.py[ \t]*$", text):
        try:
            tree = ast.parse(chunk)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model" for t in node.targets):
                model = _merge(model, _literal(node.value))
    backbone = model.get("backbone") if isinstance(model, dict) else None
    return backbone if isinstance(backbone, dict) else None


def _effective(backbone: Dict[str, Any], v1: bool) -> Dict[str, Any]:
    """The settings of the network that was trained: the config's values over mmaction2's defaults,
    which differ between versions (`ResNet3d` in 0.x: temporal strides 2; `ResNet3dSlowOnly` in 0.x
    never applies pool2, in 1.x only with `with_pool2=True`)."""
    slowonly = str(backbone.get("type", "")).rsplit(".", 1)[-1] == "ResNet3dSlowOnly"
    stride_t = 1 if slowonly or v1 else 2
    cfg: Dict[str, Any] = {**_FIXED, "conv1_stride_t": stride_t, "pool1_stride_t": stride_t,
                           "temporal_strides": (1, 1, 1, 1), "with_pool2": not slowonly,
                           "non_local": (0, 0, 0, 0)}
    cfg.update({k: v for k, v in backbone.items() if k in cfg})
    if slowonly and not v1:
        cfg["with_pool2"] = False
    return cfg


def _flat(v: Any) -> Tuple[Any, ...]:
    if isinstance(v, tuple):
        return tuple(x for e in v for x in _flat(e))
    return (v,)


def check_config(ckpt: Any, spec: BackboneSpec, ignore_temporal_strides: bool) -> Tuple[List[str], List[str]]:
    """(problems, notes): settings of the file's config that our `spec` does not build, and what was
    not checked or was ignored. Temporal strides are problems unless `ignore_temporal_strides`."""
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    backbone = read_backbone_config(meta)
    if backbone is None:
        return [], ["the file holds no config (meta['cfg']): only its kernel sizes were checked, not "
                    "conv1_stride_t, pool1_stride_t, with_pool2 or style (mmaction2's I3D configs use "
                    "temporal strides 2 and with_pool2)"]
    kind = str(backbone.get("type", "?")).rsplit(".", 1)[-1]
    if kind not in BACKBONE_TYPES:
        return [f"backbone type {kind!r}: only {' / '.join(BACKBONE_TYPES)} map onto our backbones"], []
    cfg = _effective(backbone, v1="mmengine_version" in meta or "cfg" in meta)  # 0.x (mmcv): 'config'
    problems: List[str] = []
    strides = [f"{k}={cfg[k]!r}" for k, ours in _TEMPORAL_STRIDES.items()
               if cfg[k] is not _UNREAD and _flat(cfg[k]) != _flat(ours)]
    notes: List[str] = [f"{k} not read from the file's config" for k in cfg if cfg[k] is _UNREAD]
    if strides and ignore_temporal_strides:
        notes.append(f"ignored the file's temporal strides ({', '.join(strides)}): {spec.name} keeps "
                     "every frame, so the network differs from the one the weights were trained in")
    elif strides:
        problems.append(f"{', '.join(strides)}: {spec.name} has no temporal stride (it keeps every frame); "
                        "pass ignore_temporal_strides=True to load the weights anyway (`ada3d train` does, "
                        "to fine-tune from them)")
    if cfg["with_pool2"] is not _UNREAD and bool(cfg["with_pool2"]) != spec.temporal_pool:
        fix = "true" if cfg["with_pool2"] else "false"
        problems.append(f"with_pool2={cfg['with_pool2']!r} (temporal max-pool (2,1,1) after layer1) but "
                        f"{spec.name} is built with temporal_pool={spec.temporal_pool}; set "
                        f"model.backbone.temporal_pool: {fix} in the recipe (build_backbone(..., "
                        f"temporal_pool={fix.capitalize()}))")
    for k, ours in _FIXED.items():
        if cfg[k] is not _UNREAD and _flat(cfg[k]) != _flat(ours):
            problems.append(f"{k}={cfg[k]!r}: our backbones are built with {k}={ours!r}")
    if cfg["non_local"] is not _UNREAD and any(_flat(cfg["non_local"])):
        problems.append("non_local blocks: our backbones have none")
    return problems, notes
