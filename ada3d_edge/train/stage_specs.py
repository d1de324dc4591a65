"""Training stages as data: one frozen `StageSpec` per stage, registered by name.

What a stage is (which stage it starts from, which parts it trains, the BatchNorm modes, the step
module that computes its loss, its optimiser groups and the recipe keys that set them, how it is
validated, when BatchNorm statistics are measured) is written here once; the trainer, the optimiser
builder, the CLI and the demo read the spec instead of switching on the stage's name. Recipe values
are named by dotted keys; a tuple of keys takes the first one that is set (not null), so
`("joint.head_lr", "policy.head_lr", "joint.lr")` reads joint's own key, then the policy stage's,
then joint's rate. Torch-free: the step modules are built by functions that import them on call.

Model parts (see `parts` in stages.py): ``backbone``; ``selection_body`` (the selection network's
MobileNetV2 and head norm); ``policy_heads`` (the frame and stage heads); ``selection_classifier``
(the 2D classifier stage 0 pretrains); ``selection`` in an optimiser group = every trainable
parameter of the selection network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

Keys = Tuple[str, ...]
PARTS = ("backbone", "selection_body", "policy_heads", "selection_classifier")
BACKBONE_MODES = ("train", "eval", "bn_eval")  # bn_eval: train mode, BatchNorm statistics frozen
VAL_MODES = ("upper", "ada3d", "random")  # inference.quick_validate


@dataclass(frozen=True)
class OptimGroup:
    """One optimiser parameter group: a model part, its learning rate and weight decay (recipe keys),
    and the optimiser it belongs to (``sgd``, or a recipe key whose value is ``sgd`` | ``adamw``)."""

    part: str
    lr: Keys
    weight_decay: Keys
    optimizer: str = "sgd"


@dataclass(frozen=True)
class StepInputs:
    """What a step module needs beside the model and the recipe."""

    baseline: Any = None        # rewards.Baseline (policy-gradient stages)
    dist_info: Any = None       # dist.DistInfo
    random_policy: Optional[Dict[str, float]] = None  # Random FT: frame_prob, stage_prob


StepBuilder = Callable[["StageSpec", Any, Any, StepInputs], Any]


@dataclass(frozen=True)
class StageSpec:
    """One training stage.

    Attributes:
        name: registry key and `<output_dir>/<name>/` folder; the CLI spells it with dashes.
        summary: one line for help texts.
        section: the recipe section that drives the stage (epochs, batch size, rates).
        previous: the stage whose final.pt it starts from (None: `init_from.<name>` or scratch).
        trains: model parts with gradients (PARTS); every other parameter is frozen.
        backbone_mode, selection_mode: train/eval modes set at the start of every epoch.
        step: builds the module whose forward returns (loss, stats).
        groups: optimiser parameter groups, in order.
        epochs, batch_size: recipe keys.
        val_mode: how per-epoch validation picks actions (VAL_MODES).
        calibrate_bn_after: measure per-configuration BN statistics after the last epoch.
        calibrate_bn_before: measure them first when the starting backbone has none.
        random_policy: trains under random policies matched to `random_policy` usage targets.
        selection_init: recipe key of a checkpoint (another dataset's) whose selection network
            (MobileNetV2 trunk, head norm, frame and stage heads; not its classifier) replaces the
            started-from one before training (policy transfer, the paper's Table 3).
        in_pipeline: one of the stages `ada3d train all` runs, in registry order.
    """

    name: str
    summary: str
    section: str
    previous: Optional[str]
    trains: Tuple[str, ...]
    backbone_mode: str
    selection_mode: str
    step: StepBuilder
    groups: Tuple[OptimGroup, ...]
    epochs: Keys
    batch_size: Keys
    val_mode: str
    calibrate_bn_after: bool
    calibrate_bn_before: bool = False
    random_policy: bool = False
    selection_init: Optional[str] = None
    in_pipeline: bool = True

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    def __post_init__(self) -> None:
        bad = [p for p in self.trains if p not in PARTS]
        if bad or self.backbone_mode not in BACKBONE_MODES or self.selection_mode not in ("train", "eval") \
                or self.val_mode not in VAL_MODES:
            raise ValueError(f"stage {self.name!r}: bad spec (parts {bad}, modes {self.backbone_mode!r}/"
                             f"{self.selection_mode!r}, validation {self.val_mode!r})")


def recipe_value(recipe: Any, keys: Keys) -> Any:
    """The first of the dotted recipe `keys` that is set (not None); None when none is."""
    for key in keys:
        node = recipe
        for part in key.split("."):
            node = getattr(node, part)
        if node is not None:
            return node
    return None


# --- step builders (torch loads when a stage runs) ----------------------------------------------

def _upper_step(spec: StageSpec, model, recipe, inputs: StepInputs):
    from .stages import UpperStep

    return UpperStep(model, recipe.optim.random_policy_prob)


def _policy_step(spec: StageSpec, model, recipe, inputs: StepInputs):
    from .costs import make_cost
    from .stages import PolicyStep

    cost = make_cost(recipe.policy.cost, recipe.model.arch, model.backbone.spec, recipe.data.test_crop,
                     recipe.policy.cost_lut)
    return PolicyStep(model, recipe.policy.gamma, inputs.baseline, "backbone" in spec.trains, inputs.dist_info,
                      recipe.policy.entropy_coef, cost)


def _random_ft_step(spec: StageSpec, model, recipe, inputs: StepInputs):
    from .stages import RandomFtStep

    return RandomFtStep(model, inputs.random_policy["frame_prob"], inputs.random_policy["stage_prob"])


def _transfer_step(spec: StageSpec, model, recipe, inputs: StepInputs):
    from .stages import TransferStep

    return TransferStep(model, recipe.transfer.actions, recipe.threshold)


# --- the stages ---------------------------------------------------------------------------------

_JOINT_SELECTION_DECAY = ("joint.weight_decay", "policy.weight_decay")

STAGE_REGISTRY: Dict[str, StageSpec] = {s.name: s for s in (
    StageSpec(
        name="upper", summary="stage 0: backbone on all frames, all 3D; MobileNetV2 pretrained as a 2D classifier",
        section="optim", previous=None, trains=("backbone", "selection_body", "selection_classifier"),
        backbone_mode="train", selection_mode="train", step=_upper_step,
        groups=(OptimGroup("selection", ("optim.selection_lr", "optim.lr"), ("optim.weight_decay",),
                           optimizer="optim.selection_optimizer"),
                OptimGroup("backbone", ("optim.lr",), ("optim.weight_decay",))),
        epochs=("optim.epochs",), batch_size=("optim.batch_size",), val_mode="upper", calibrate_bn_after=True),
    StageSpec(
        name="policy", summary="stage 1: the selection network by REINFORCE, backbone frozen in eval mode",
        section="policy", previous="upper", trains=("selection_body", "policy_heads"),
        backbone_mode="eval", selection_mode="train", step=_policy_step,
        groups=(OptimGroup("selection_body", ("policy.lr",), ("policy.weight_decay",)),
                OptimGroup("policy_heads", ("policy.head_lr", "policy.lr"), ("policy.weight_decay",))),
        epochs=("policy.epochs",), batch_size=("policy.batch_size",), val_mode="ada3d",
        calibrate_bn_after=False, calibrate_bn_before=True),
    StageSpec(
        name="joint", summary="stage 2: policy gradient + cross-entropy for the backbone under the sampled policies",
        section="joint", previous="policy", trains=("backbone", "selection_body", "policy_heads"),
        backbone_mode="bn_eval", selection_mode="train", step=_policy_step,
        groups=(OptimGroup("selection_body", ("joint.lr",), _JOINT_SELECTION_DECAY),
                OptimGroup("policy_heads", ("joint.head_lr", "policy.head_lr", "joint.lr"), _JOINT_SELECTION_DECAY),
                OptimGroup("backbone", ("joint.backbone_lr", "joint.lr"), ("optim.weight_decay",))),
        epochs=("joint.epochs",), batch_size=("joint.batch_size",), val_mode="ada3d", calibrate_bn_after=True),
    StageSpec(
        name="random_ft", summary="the Random FT baseline: the backbone under random policies",
        section="random_ft", previous="upper", trains=("backbone",),
        backbone_mode="bn_eval", selection_mode="eval", step=_random_ft_step,
        groups=(OptimGroup("backbone", ("random_ft.lr", "joint.backbone_lr", "joint.lr"), ("optim.weight_decay",)),),
        epochs=("random_ft.epochs", "joint.epochs"), batch_size=("random_ft.batch_size", "joint.batch_size"),
        val_mode="random", calibrate_bn_after=True, random_policy=True, in_pipeline=False),
    StageSpec(  # Table 5's "w/o Tr": the heads start untrained (stage 0 never trains them)
        name="joint_from_upper", summary="stage 2 started from upper, skipping stage 1 (the paper's \"w/o Tr\" "
                                         "ablation): the selection heads start untrained",
        section="joint", previous="upper", trains=("backbone", "selection_body", "policy_heads"),
        backbone_mode="bn_eval", selection_mode="train", step=_policy_step,
        groups=(OptimGroup("selection_body", ("joint.lr",), _JOINT_SELECTION_DECAY),
                OptimGroup("policy_heads", ("joint.head_lr", "policy.head_lr", "joint.lr"), _JOINT_SELECTION_DECAY),
                OptimGroup("backbone", ("joint.backbone_lr", "joint.lr"), ("optim.weight_decay",))),
        epochs=("joint.epochs",), batch_size=("joint.batch_size",), val_mode="ada3d", calibrate_bn_after=True,
        in_pipeline=False),
    StageSpec(  # Table 3: policies learned on one dataset, backbone fine-tuned on another
        name="transfer", summary="policy transfer: the backbone (this data's upper) fine-tuned under the frozen "
                                 "policies of init_from.selection (another dataset's selection network)",
        section="transfer", previous="upper", trains=("backbone",),
        backbone_mode="bn_eval", selection_mode="eval", step=_transfer_step,
        groups=(OptimGroup("backbone", ("transfer.lr", "joint.backbone_lr", "joint.lr"), ("optim.weight_decay",)),),
        epochs=("transfer.epochs", "joint.epochs"), batch_size=("transfer.batch_size", "joint.batch_size"),
        val_mode="ada3d", calibrate_bn_after=True, selection_init="init_from.selection", in_pipeline=False),
)}
PIPELINE: Tuple[str, ...] = tuple(name for name, s in STAGE_REGISTRY.items() if s.in_pipeline)  # `train all`
CLI_NAMES: Dict[str, str] = {**{s.cli_name: s.name for s in STAGE_REGISTRY.values()},
                             **{s.name: s.name for s in STAGE_REGISTRY.values()}}


def get_stage(name: str) -> StageSpec:
    """The spec of stage `name` (`random_ft` or `random-ft`); ValueError listing the valid names."""
    key = CLI_NAMES.get(name)
    if key is None:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGE_REGISTRY)}")
    return STAGE_REGISTRY[key]
