"""From a recipe to datasets, the model, the stage's starting weights and its optimiser."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..data.dataset import VideoListDataset
from ..data.lists import require_dir, require_file
from ..models.ada3d import Ada3D, Ada3DConfig, build_ada3d, load_ada3d_state
from .checkpoint import FORMAT, read_checkpoint
from .config import Recipe
from .optimizers import MixedOptimizer
from .stage_specs import OptimGroup, StageSpec, get_stage, recipe_value
from .stages import part_modules

MODEL_KEYS = ("arch", "num_classes", "num_frames", "selection_width", "policy_size", "selection_depth",
              "selection_groups", "selection_last_channels")


def check_data_paths(recipe: Recipe) -> None:
    """Fail before any work when a list, the classes file or the root is missing."""
    d = recipe.data
    require_dir(d.root, "data root", "data.root")
    require_file(d.classes, "classes file", "data.classes")
    require_file(d.train_list, "training list", "data.train_list")
    require_file(d.val_list, "validation list", "data.val_list")


def _path(recipe: Recipe, p: str) -> str:
    """List/classes paths: absolute, relative to data.root when found there, else as given."""
    if Path(p).is_absolute():
        return p
    under_root = Path(recipe.data.root) / p
    return str(under_root) if under_root.exists() else p


def resolve_data_paths(recipe: Recipe) -> None:
    d = recipe.data
    if d.root:
        for name in ("train_list", "val_list", "classes"):
            if getattr(d, name):
                setattr(d, name, _path(recipe, getattr(d, name)))


def make_dataset(recipe: Recipe, split: str, list_file: Optional[str] = None,
                 num_clips: Optional[int] = None) -> VideoListDataset:
    d = recipe.data
    return VideoListDataset(
        list_file or (d.train_list if split == "train" else d.val_list), d.root, d.classes,
        split=split, num_frames=d.num_frames, stride=d.stride, crop_size=d.crop,
        short_side_range=tuple(d.short_side_range), test_crop_size=d.test_crop,
        num_clips=num_clips or d.num_clips, policy_size=recipe.model.policy_size, mean=d.mean,
        std=d.std, multi_label=d.multi_label, seed=recipe.seed, flip=d.flip)


def model_config(recipe: Recipe, num_classes: int) -> Ada3DConfig:
    m, d = recipe.model, recipe.data
    if m.num_classes is not None and m.num_classes != num_classes:
        raise ValueError(f"model.num_classes={m.num_classes} but {d.classes} lists {num_classes} classes; "
                         f"leave model.num_classes null to take it from the classes file")
    overrides = dict(m.backbone)
    overrides.setdefault("crop_size", d.crop)
    overrides.setdefault("sampling_stride", d.stride)
    return Ada3DConfig(arch=m.arch, num_classes=num_classes, num_frames=d.num_frames,
                       backbone_overrides=overrides, selection_width=m.selection_width,
                       policy_size=m.policy_size, selection_depth=m.selection_depth,
                       selection_groups=m.selection_groups, selection_last_channels=m.selection_last_channels)


def data_info(recipe: Recipe, classes: List[str], multi_label: bool) -> Dict[str, Any]:
    """The checkpoint's `data` entry (what eval and export need to preprocess like training)."""
    d = recipe.data
    return {"num_frames": d.num_frames, "stride": d.stride, "crop_size": d.crop,
            "test_crop_size": d.test_crop, "policy_size": recipe.model.policy_size,
            "mean": list(d.mean), "std": list(d.std), "classes": list(classes),
            "multi_label": bool(multi_label), "threshold": recipe.threshold, "num_clips": d.num_clips}


def init_path(recipe: Recipe, stage: str) -> Optional[str]:
    """The checkpoint `stage` starts from: init_from.<stage>, else the previous stage's final.pt."""
    spec = get_stage(stage)
    given = getattr(recipe.init_from, spec.name)
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"init_from.{spec.name}={given!r} does not exist")
        return given
    if spec.previous is None:
        return None
    prev = get_stage(spec.previous)
    path = recipe.stage_dir(prev.name) / "final.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"stage {spec.name!r} starts from the {prev.name!r} stage's checkpoint, but {path} does not exist; "
            f"run `ada3d train {prev.cli_name} RECIPE` first or set init_from.{spec.name}=PATH")
    return str(path)


def is_ada3d_checkpoint(path: str) -> bool:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_init(model: Ada3D, path: Optional[str]) -> Dict[str, Any]:
    """Load an ada3d checkpoint (whole model) or foreign backbone weights (pytorchvideo / PySlowFast /
    mmaction2; head re-initialised when the class count differs; temporal strides of the file's config,
    which our backbones do not have, ignored: fine-tuning starts from the weights). Returns what was
    loaded, for the log."""
    if path is None:
        return {"init": "scratch"}
    if is_ada3d_checkpoint(path):
        ckpt = read_checkpoint(path)
        mine, theirs = model.config, ckpt["model_config"]
        diff = [f"{k}: recipe {mine.get(k)!r} vs checkpoint {theirs.get(k)!r}"
                for k in (*MODEL_KEYS, "backbone_overrides") if mine.get(k) != theirs.get(k)]
        if diff:
            raise ValueError(f"{path} was trained with another model than this recipe builds ("
                             + "; ".join(diff) + "); start from a checkpoint of this model or change the recipe")
        load_ada3d_state(model, ckpt["model"])
        return {"init": path, "init_stage": ckpt.get("stage"), "init_metrics": ckpt.get("metrics", {})}
    from ..models.pretrained import load_pretrained
    skipped = load_pretrained(model, path, reset_head=True, ignore_temporal_strides=True)
    return {"init": path, "init_stage": "pretrained", **skipped}


SELECTION_KEYS = ("num_frames", "selection_width", "policy_size", "selection_depth", "selection_groups",
                  "selection_last_channels")


def selection_init_path(recipe: Recipe, spec: StageSpec) -> Optional[str]:
    """The checkpoint named by the stage's `selection_init` recipe key (None when the stage has none)."""
    if spec.selection_init is None:
        return None
    given = recipe_value(recipe, (spec.selection_init,))
    if not given:
        raise ValueError(f"stage {spec.name!r} needs {spec.selection_init}=CKPT: an ada3d checkpoint (policy or "
                         f"joint, another dataset's) whose selection network it keeps frozen")
    if not Path(given).is_file():
        raise FileNotFoundError(f"{spec.selection_init}={given!r} does not exist")
    return str(given)


def load_selection(model: Ada3D, path: str, option: str = "init_from.selection") -> Dict[str, Any]:
    """Replace `model`'s selection network (MobileNetV2 trunk, head norm, frame and stage heads) by
    the one in the ada3d checkpoint `path`; its 2D classifier is left out (another dataset's classes).
    The checkpoint must have the same T, K, selection width and policy input size."""
    if not is_ada3d_checkpoint(path):
        raise ValueError(f"{option}={path}: not an ada3d checkpoint (the selection network comes from a policy "
                         "or joint final.pt)")
    ckpt = read_checkpoint(path)
    mine, theirs = model.config, ckpt["model_config"]
    diff = [f"{k}: this model {mine.get(k)!r} vs checkpoint {theirs.get(k)!r}"
            for k in SELECTION_KEYS if mine.get(k) != theirs.get(k)]
    state = {k[len("selection."):]: v for k, v in ckpt["model"].items()
             if k.startswith("selection.") and not k.startswith("selection.classifier.")}
    k_ckpt = state.get("stage_head.weight")
    if k_ckpt is not None and k_ckpt.shape[0] != model.selection.stage_head.out_features:
        diff.append(f"3D stages (K): this model {model.selection.stage_head.out_features} vs checkpoint "
                    f"{k_ckpt.shape[0]}")
    if diff:
        raise ValueError(f"{option}={path} holds another selection network than this recipe builds ("
                         + "; ".join(diff) + "); train it with the same T, K, model.selection_width, "
                         "model.selection_depth, model.selection_groups, model.selection_last_channels and "
                         "model.policy_size")
    own = {k: v for k, v in model.selection.state_dict().items() if k.startswith("classifier.")}
    res = model.selection.load_state_dict({**state, **own}, strict=False)
    if res.missing_keys or res.unexpected_keys:
        raise ValueError(f"{option}={path}: the selection network does not fit (missing {res.missing_keys[:5]}, "
                         f"unexpected {res.unexpected_keys[:5]})")
    return {"selection_init": path, "selection_init_stage": ckpt.get("stage"),
            "selection_init_classes": len((ckpt.get("data") or {}).get("classes") or [])}


def build_model(recipe: Recipe, num_classes: int) -> Ada3D:
    return build_ada3d(model_config(recipe, num_classes))


def _group_params(model: Ada3D, part: str) -> List[nn.Parameter]:
    """The trainable parameters of an optimiser group's part (`selection`: the whole selection network)."""
    modules = [model.selection] if part == "selection" else part_modules(model, part)
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def _group(recipe: Recipe, model: Ada3D, group: OptimGroup) -> Dict[str, Any]:
    return {"params": _group_params(model, group.part), "lr": recipe_value(recipe, group.lr),
            "weight_decay": recipe_value(recipe, group.weight_decay)}


def _optimizer_kind(recipe: Recipe, group: OptimGroup) -> str:
    return recipe_value(recipe, (group.optimizer,)) if "." in group.optimizer else group.optimizer


def make_optimizer(recipe: Recipe, model: Ada3D, stage: Union[str, StageSpec]) -> torch.optim.Optimizer:
    """The stage's parameter groups (`StageSpec.groups`: rates and weight decay from the recipe keys
    it names) in SGD with momentum `optim.momentum`. A group whose optimiser is AdamW (stage 0's
    MobileNetV2 with `optim.selection_optimizer: adamw`) goes to an AdamW beside the SGD
    (`MixedOptimizer`)."""
    spec = stage if isinstance(stage, StageSpec) else get_stage(stage)
    groups = [(_optimizer_kind(recipe, g), _group(recipe, model, g)) for g in spec.groups]
    adamw = [g for kind, g in groups if kind == "adamw"]
    sgd = [g for kind, g in groups if kind != "adamw"]
    momentum = recipe.optim.momentum
    if adamw:
        return MixedOptimizer([torch.optim.AdamW(adamw, lr=adamw[0]["lr"]),
                               torch.optim.SGD(sgd, lr=sgd[0]["lr"], momentum=momentum)])
    return torch.optim.SGD(sgd, lr=sgd[0]["lr"], momentum=momentum)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up, then cosine from 1 to 0 over the remaining steps (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
