"""Training stages are registered specs: every stage is checked through the registry."""
import dataclasses

import pytest
import torch

from ada3d_edge.models import Ada3DConfig, build_ada3d
from ada3d_edge.train.build import make_optimizer
from ada3d_edge.train.config import InitCfg, recipe_from_dict, valid_keys
from ada3d_edge.train.stage_specs import PARTS, PIPELINE, STAGE_REGISTRY, get_stage
from ada3d_edge.train.stages import part_modules, prepare
from train_helpers import tiny_recipe


def _recipe(tmp_path, **sections):
    return recipe_from_dict(tiny_recipe(tmp_path, tmp_path, **sections), check_required=False)


def _model():
    torch.manual_seed(0)
    return build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=4, selection_width=0.35, policy_size=32))


def test_every_stage_names_real_recipe_keys_and_stages():
    keys = set(valid_keys())
    init_fields = {f.name for f in dataclasses.fields(InitCfg)}
    for name, spec in STAGE_REGISTRY.items():
        assert name in init_fields, f"init_from.{name} missing"
        assert spec.previous is None or spec.previous in STAGE_REGISTRY
        assert spec.section in {k.split(".")[0] for k in keys}
        named = [*spec.epochs, *spec.batch_size] + [k for g in spec.groups for k in (*g.lr, *g.weight_decay)]
        named += [g.optimizer for g in spec.groups if "." in g.optimizer]
        assert set(named) <= keys, (name, set(named) - keys)
        assert get_stage(spec.cli_name) is spec
    assert PIPELINE == ("upper", "policy", "joint")
    with pytest.raises(ValueError, match="valid: upper, policy, joint, random_ft"):
        get_stage("stage3")


@pytest.mark.parametrize("name", sorted(STAGE_REGISTRY))
def test_stage_trains_its_parts_and_its_optimizer_holds_exactly_them(tmp_path, name):
    spec, model = STAGE_REGISTRY[name], _model()
    prepare(model, spec)
    for part in PARTS:
        grads = {p.requires_grad for m in part_modules(model, part) for p in m.parameters()}
        assert grads == {part in spec.trains}, (name, part)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    opt = make_optimizer(_recipe(tmp_path), model, spec)
    groups = [g for o in getattr(opt, "optimizers", [opt]) for g in o.param_groups]
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(trainable)  # each trainable parameter in exactly one group


def test_parts_cover_the_whole_model():
    model = _model()
    ids = [id(p) for part in PARTS for m in part_modules(model, part) for p in m.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_joint_has_its_own_head_lr_and_weight_decay_defaulting_to_the_policy_stage(tmp_path):
    model = _model()
    heads = {id(p) for h in (model.selection.frame_head, model.selection.stage_head) for p in h.parameters()}

    def joint_groups(**sections):
        prepare(model, get_stage("joint"))
        opt = make_optimizer(_recipe(tmp_path, **sections), model, "joint")
        head = next(g for g in opt.param_groups if {id(p) for p in g["params"]} == heads)
        return opt.param_groups[0], head

    body, head = joint_groups(policy={"head_lr": 0.3, "weight_decay": 0.002})  # the keys joint used to share
    assert (head["lr"], head["weight_decay"], body["weight_decay"]) == (0.3, 0.002, 0.002)
    body, head = joint_groups(policy={"head_lr": 0.3, "weight_decay": 0.002},
                              joint={"head_lr": 0.07, "weight_decay": 0.0})
    assert (head["lr"], head["weight_decay"], body["weight_decay"]) == (0.07, 0.0, 0.0)
    body, head = joint_groups()
    assert head["lr"] == body["lr"] == 0.01  # joint.lr of the tiny recipe
    with pytest.raises(ValueError, match="joint.head_lr"):
        _recipe(tmp_path, joint={"head_lr": 0})


def test_cli_offers_the_registered_stages():
    from ada3d_edge.train.commands import train_cmd

    choices = next(p for p in train_cmd.params if p.name == "stage").type.choices
    assert list(choices) == [s.cli_name for s in STAGE_REGISTRY.values()] + ["all"]
