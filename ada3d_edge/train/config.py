"""Training recipes: dataclasses loaded from YAML, with `--set key=value` overrides.

A recipe has these sections (every key optional unless marked; unknown keys are errors)::

    model:     arch, backbone (spec overrides: depths, widths, stem_width, dropout, ...),
               num_classes (null = from the classes file), selection_width, policy_size,
               selection_depth (MobileNetV2 blocks per group at most; null = all), selection_groups
               (the first groups of MobileNetV2's 7; null = all)
    data:      root, train_list, val_list, classes (all required), num_frames, stride, crop,
               short_side_range, test_crop, num_clips (eval), val_clips (per-epoch validation),
               val_every (epochs; 0 = only after the last), flip, multi_label, mean, std, workers,
               max_bad_fraction
    optim:     stage 0 ("upper", fine-tuning) and the settings every stage shares:
               lr, selection_lr (stage 0's MobileNetV2, null = lr), selection_optimizer (sgd | adamw:
               stage 0's MobileNetV2; the backbone always uses SGD), momentum, weight_decay,
               schedule (cosine | constant), warmup_epochs, epochs, batch_size
    policy:    stage 1 and the reward: gamma, baseline (batch_mean | moving_average | self_critical),
               cost (usage | flops | latency: the reward's O(x), costs.py), cost_lut (latency: the
               `ada3d bench --lut` file),
               baseline_momentum, entropy_coef, lr, head_lr (null = lr), epochs, batch_size, weight_decay
               (gamma, baseline and entropy_coef drive stage 2's policy gradient too)
    joint:     stage 2: lr (selection network), backbone_lr (null = lr), head_lr (null = policy.head_lr,
               else lr), weight_decay (selection network; null = policy.weight_decay; the backbone
               uses optim.weight_decay), epochs, batch_size
    random_ft: Random FT: lr (null = joint backbone lr), epochs / batch_size (null = joint's)
    transfer:  policy transfer (Table 3): lr (null = joint backbone lr), epochs / batch_size (null =
               joint's), actions (sample | greedy: how the frozen selection network picks them)
    random_policy: frames, stages — mean usage targets (fractions of T and K) for Random FT
    bn_calibration: batches (per stage configuration; 0 = off), frame_keep_prob — BatchNorm
               statistics measured per configuration after upper, joint and random_ft (and before
               policy when its backbone has none); see bn_calibration.py
    init_from: upper, policy, joint, random_ft, joint_from_upper, transfer — checkpoint each stage
               starts from (null = the previous stage's final.pt in output_dir; upper: from scratch);
               selection — the checkpoint (another dataset's) whose selection network `transfer` uses
    seed, output_dir, device (auto | cpu | cuda), threshold, gammas (for `ada3d sweep`)

Which keys drive which stage (rates, weight decay, epochs, batch size) is written in each stage's
spec (`stage_specs.STAGE_REGISTRY`). Batch sizes are global (divided by the number of DDP
processes), as in PySlowFast. Relative paths
are relative to the working directory; list and classes paths are looked up under `data.root` first.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from ..models.specs import SELECTION_GROUPS

BASELINES = ("batch_mean", "moving_average", "self_critical")  # policy.baseline (rewards.Baseline)
COSTS = ("usage", "flops", "latency")  # policy.cost (costs.COST_SPECS)
SELECTION_OPTIMIZERS = ("sgd", "adamw")  # optim.selection_optimizer (build.make_optimizer)
TRANSFER_ACTIONS = ("sample", "greedy")  # transfer.actions (stages.TransferStep)
REQUIRED = ("data.root", "data.train_list", "data.val_list", "data.classes")


@dataclass
class ModelCfg:
    """Defaults: the paper's SlowOnly 8x8 (`slow_r50`), to go with DataCfg's Kinetics-size defaults;
    the demo and the tests name their small arch in the recipe."""

    arch: str = "slow_r50"
    backbone: Dict[str, Any] = field(default_factory=dict)
    num_classes: Optional[int] = None
    selection_width: float = 1.0
    policy_size: int = 112
    selection_depth: Optional[int] = None   # inverted residuals per MobileNetV2 group at most (null: all)
    selection_groups: Optional[int] = None  # the first MobileNetV2 groups of 7 (null: all)
    selection_last_channels: Optional[int] = None  # the last 1x1 conv's channels (null: MobileNetV2's 1280)


@dataclass
class DataCfg:
    root: Optional[str] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    classes: Optional[str] = None
    num_frames: int = 8
    stride: int = 8
    crop: int = 224
    short_side_range: Tuple[int, int] = (256, 320)
    test_crop: int = 256
    num_clips: int = 10
    val_clips: int = 1
    val_every: int = 1
    flip: bool = True
    multi_label: Optional[bool] = None
    mean: Tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: Tuple[float, float, float] = (0.225, 0.225, 0.225)
    workers: int = 4
    max_bad_fraction: float = 0.01


@dataclass
class OptimCfg:
    lr: float = 0.01
    selection_lr: Optional[float] = None  # stage 0's MobileNetV2 classifier (null = lr)
    selection_optimizer: str = "sgd"  # stage 0's MobileNetV2: sgd (the paper) | adamw (from scratch)
    random_policy_prob: float = 0.0  # stage 0: share of steps under a random policy (0 = the paper's Upper)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    epochs: int = 40
    batch_size: int = 64


@dataclass
class PolicyCfg:
    gamma: float = 0.5
    baseline: str = "batch_mean"
    baseline_momentum: float = 0.9
    lr: float = 1e-4
    head_lr: Optional[float] = None  # the two policy heads in stage 1 (and 2 unless joint.head_lr); None = lr
    entropy_coef: float = 0.0  # bonus on the policies' Bernoulli entropy (stages 1-2); 0 = the paper
    epochs: int = 40
    batch_size: int = 256
    weight_decay: float = 1e-4
    cost: str = "usage"  # the reward's O(x): usage (the paper) | flops | latency (costs.py)
    cost_lut: Optional[str] = None  # policy.cost=latency: the table of `ada3d bench BUNDLE --lut FILE`


@dataclass
class JointCfg:
    lr: float = 1e-4
    backbone_lr: Optional[float] = None
    head_lr: Optional[float] = None  # the two policy heads; None = policy.head_lr, else joint.lr
    weight_decay: Optional[float] = None  # the selection network; None = policy.weight_decay
    epochs: int = 60
    batch_size: int = 256


@dataclass
class RandomFtCfg:
    lr: Optional[float] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None


@dataclass
class TransferCfg:
    lr: Optional[float] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    actions: str = "sample"  # the frozen selection network's actions while the backbone trains


@dataclass
class RandomPolicyCfg:
    frames: Optional[float] = None
    stages: Optional[float] = None


@dataclass
class BnCalibrationCfg:
    batches: int = 50  # training batches run through every stage configuration (0 = no calibration)
    frame_keep_prob: Optional[float] = None  # drop frames at random while measuring (null = all T)


@dataclass
class InitCfg:
    upper: Optional[str] = None
    policy: Optional[str] = None
    joint: Optional[str] = None
    random_ft: Optional[str] = None
    joint_from_upper: Optional[str] = None
    transfer: Optional[str] = None
    selection: Optional[str] = None  # not a stage: `transfer`'s selection network (init_selection)


@dataclass
class Recipe:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    policy: PolicyCfg = field(default_factory=PolicyCfg)
    joint: JointCfg = field(default_factory=JointCfg)
    random_ft: RandomFtCfg = field(default_factory=RandomFtCfg)
    transfer: TransferCfg = field(default_factory=TransferCfg)
    random_policy: RandomPolicyCfg = field(default_factory=RandomPolicyCfg)
    bn_calibration: BnCalibrationCfg = field(default_factory=BnCalibrationCfg)
    init_from: InitCfg = field(default_factory=InitCfg)
    seed: int = 0
    output_dir: str = "runs/ada3d"
    device: str = "auto"
    threshold: float = 0.5
    gammas: List[float] = field(default_factory=list)
    source: Optional[str] = None  # the YAML file it came from (set by load_recipe)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict that `recipe_from_dict` reads back (the resolved config.yaml of a run)."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return _plain(d)

    def stage_dir(self, stage: str) -> Path:
        return Path(self.output_dir) / stage


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# --- keys -----------------------------------------------------------------------------------------

def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _field_types(cls) -> Dict[str, Any]:
    import typing
    return typing.get_type_hints(cls)


def valid_keys(cls=Recipe, prefix: str = "") -> List[str]:
    """Every dotted key a recipe accepts (`data.crop`, `policy.gamma`, ...)."""
    out: List[str] = []
    for name, tp in _field_types(cls).items():
        if name == "source":
            continue
        if _is_section(tp):
            out += valid_keys(tp, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the field's type; ValueError naming the key otherwise."""
    import typing
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if value is None:
        raise ValueError(f"{key} may not be null")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin in (tuple, Tuple):
        if isinstance(value, (list, tuple)):
            n = len(args) if args and args[-1] is not Ellipsis else len(value)
            if len(value) == n:
                return tuple(_coerce(v, args[min(i, len(args) - 1)], f"{key}[{i}]")
                             for i, v in enumerate(value))
    elif origin in (list, List):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, (list, tuple)):
            return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin in (dict, Dict):
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise ValueError(f"{key}: {value!r} is not a valid {getattr(tp, '__name__', tp)}")


def _build(cls, data: Dict[str, Any], prefix: str = ""):
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'recipe'} must be a mapping, got {data!r}")
    types = _field_types(cls)
    unknown = [k for k in data if k not in types or k == "source"]
    if unknown:
        valid = [k for k in valid_keys(cls, prefix)]
        raise ValueError(f"unknown recipe key(s) {[prefix + k for k in unknown]}; valid keys: "
                         f"{', '.join(valid)}")
    kwargs = {}
    for name, value in data.items():
        tp = types[name]
        if _is_section(tp):
            kwargs[name] = _build(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def parse_set(items: Sequence[str]) -> Dict[str, Any]:
    """`["policy.gamma=0.3", "data.crop=48"]` -> nested dict with YAML-typed values."""
    out: Dict[str, Any] = {}
    valid = set(valid_keys())
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set policy.gamma=0.3")
        key, text = item.split("=", 1)
        key = key.strip()
        # model.backbone takes sub-keys (spec overrides): model.backbone.depths=[1,1,1,1]
        if key not in valid and not key.startswith("model.backbone."):
            raise ValueError(f"--set: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: value is not valid YAML: {e}") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def recipe_from_dict(data: Dict[str, Any], overrides: Sequence[str] = (), base_dir: Optional[Path] = None,
                     check_required: bool = True) -> Recipe:
    """Build and validate a recipe from a dict plus `--set` overrides.

    Relative data paths are resolved against `data.root`; a relative `data.root` against `base_dir`.
    """
    data = _merge(data or {}, parse_set(overrides))
    recipe = _build(Recipe, data)
    if base_dir is not None and recipe.data.root and not Path(recipe.data.root).is_absolute():
        recipe.data.root = str((base_dir / recipe.data.root).resolve())
    validate(recipe, check_required)
    return recipe


def load_recipe(path: Union[str, Path], overrides: Sequence[str] = (), check_required: bool = True) -> Recipe:
    """Read a recipe YAML (see the module docstring), apply `--set` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found; recipes live in train/ (e.g. train/demo.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of sections (model:, data:, optim:, ...), "
                         f"got a {type(data).__name__}; see train/README.md")
    recipe = recipe_from_dict(data, overrides, check_required=check_required)
    recipe.source = str(path)
    return recipe


def _choice(value: str, options: Sequence[str], key: str) -> None:
    if value not in options:
        raise ValueError(f"{key}={value!r} is not one of {list(options)}")


def _positive(value, key: str, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(r: Recipe, check_required: bool = True) -> None:
    """Range and choice checks; missing required keys listed together."""
    if check_required:
        missing = [k for k in REQUIRED if getattr(r.data, k.split(".")[1]) in (None, "")]
        if missing:
            raise ValueError(f"recipe is missing required key(s) {missing}; set them in the YAML or "
                             f"with --set (e.g. --set data.root=/path/to/videos)")
    _choice(r.optim.schedule, ("cosine", "constant"), "optim.schedule")
    _choice(r.optim.selection_optimizer, SELECTION_OPTIMIZERS, "optim.selection_optimizer")
    if not 0.0 <= r.optim.random_policy_prob <= 1.0:
        raise ValueError(f"optim.random_policy_prob must be in [0, 1], got {r.optim.random_policy_prob}")
    _choice(r.policy.baseline, BASELINES, "policy.baseline")
    _choice(r.policy.cost, COSTS, "policy.cost")
    if (r.policy.cost == "latency") != bool(r.policy.cost_lut):
        raise ValueError("policy.cost=latency needs policy.cost_lut: FILE (write it with `ada3d bench BUNDLE --lut "
                         "FILE`)" if r.policy.cost == "latency" else
                         f"policy.cost_lut is read only with policy.cost=latency (policy.cost is {r.policy.cost})")
    _positive(r.bn_calibration.batches, "bn_calibration.batches", allow_zero=True)
    keep = r.bn_calibration.frame_keep_prob
    if keep is not None and not 0.0 < keep <= 1.0:
        raise ValueError(f"bn_calibration.frame_keep_prob must be in (0, 1] or null, got {keep}")
    _choice(r.device, ("auto", "cpu", "cuda"), "device")
    _choice(r.transfer.actions, TRANSFER_ACTIONS, "transfer.actions")
    for key in ("data.num_frames", "data.stride", "data.crop", "data.test_crop", "data.num_clips",
                "data.val_clips", "model.policy_size", "optim.selection_lr", "optim.epochs", "optim.batch_size",
                "policy.epochs", "policy.batch_size", "joint.epochs", "joint.batch_size",
                "random_ft.epochs", "random_ft.batch_size", "optim.lr", "policy.lr", "joint.lr",
                "joint.backbone_lr", "random_ft.lr", "model.selection_width", "model.num_classes",
                "policy.head_lr", "joint.head_lr", "transfer.lr", "transfer.epochs", "transfer.batch_size"):
        sec, name = key.split(".")
        _positive(getattr(getattr(r, sec), name), key)
    for key in ("optim.weight_decay", "policy.weight_decay", "joint.weight_decay", "policy.entropy_coef",
                "optim.warmup_epochs", "policy.gamma",
                "data.workers", "data.val_every"):
        sec, name = key.split(".")
        _positive(getattr(getattr(r, sec), name), key, allow_zero=True)
    for key in ("selection_depth", "selection_groups", "selection_last_channels"):
        if getattr(r.model, key) is not None:
            _positive(getattr(r.model, key), f"model.{key}")
    if r.model.selection_groups is not None and r.model.selection_groups > SELECTION_GROUPS:
        raise ValueError(f"model.selection_groups must be in 1..{SELECTION_GROUPS} (MobileNetV2 has "
                         f"{SELECTION_GROUPS}), got {r.model.selection_groups}")
    if not 0.0 <= r.data.max_bad_fraction <= 1.0:
        raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {r.data.max_bad_fraction}")
    if not 0.0 <= r.policy.baseline_momentum < 1.0:
        raise ValueError(f"policy.baseline_momentum must be in [0, 1), got {r.policy.baseline_momentum}")
    if not 0.0 < r.threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {r.threshold}")
    for name in ("frames", "stages"):
        v = getattr(r.random_policy, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"random_policy.{name} must be a fraction in [0, 1], got {v}")
    lo, hi = r.data.short_side_range
    if not r.data.crop <= lo <= hi:
        raise ValueError(f"data.short_side_range={[lo, hi]} must satisfy data.crop ({r.data.crop}) <= min <= max")
    for g in r.gammas:
        _positive(g, "gammas[]", allow_zero=True)


def parse_random_policy(text: str) -> Dict[str, float]:
    """`"frames=0.6,stages=0.5"` -> `{"frames": 0.6, "stages": 0.5}` (fractions in [0, 1])."""
    out: Dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, val = part.partition("=")
        if key not in ("frames", "stages") or not val:
            raise ValueError(f"--random-policy {text!r}: expected frames=F,stages=S (fractions of T and K)")
        try:
            out[key] = float(val)
        except ValueError:
            raise ValueError(f"--random-policy {text!r}: {val!r} is not a number") from None
        if not 0.0 <= out[key] <= 1.0:
            raise ValueError(f"--random-policy {key}={out[key]} must be in [0, 1]")
    return out


def save_recipe(recipe: Recipe, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    return path
