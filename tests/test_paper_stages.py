"""The paper's ablation stages at toy size: Table 5's "w/o Tr" (`joint_from_upper`) and Table 3's
policy transfer (`transfer`: another dataset's selection network kept frozen)."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.train.checkpoint import load_model, read_checkpoint
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.trainer import train_stage
from train_helpers import tiny_recipe, write_recipe

torch.set_num_threads(1)
NO_BN = {"bn_calibration": {"batches": 1}}


@pytest.fixture(scope="module")
def set_a(tiny_synth_dataset, tmp_path_factory):
    """Upper and policy on the tiny set a (4 frames, 32 px)."""
    out = tmp_path_factory.mktemp("set_a")
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, out, **NO_BN))
    for stage in ("upper", "policy"):
        train_stage(recipe, stage, progress=False)
    return out, recipe


@pytest.fixture(scope="module")
def set_b(tmp_path_factory):
    """A tiny set b (other classes, 4 of them) and its upper."""
    from ada3d_edge.data.synth import make_synth_dataset

    data = tmp_path_factory.mktemp("tiny_synth_b")
    make_synth_dataset(data, num_classes=4, videos_per_class=2, val_per_class=1, size=32, frames=16,
                       seed=1, progress=False, overwrite=True, class_set="b")
    out = tmp_path_factory.mktemp("set_b")
    recipe = recipe_from_dict(tiny_recipe(data, out, **NO_BN))
    train_stage(recipe, "upper", progress=False)
    return data, out


def _sd(path):
    return load_model(path)[0].state_dict()


def test_joint_from_upper_skips_stage_1_and_starts_from_untrained_heads(set_a):
    out, recipe = set_a
    path = train_stage(recipe, "joint_from_upper", progress=False)
    assert path == out / "joint_from_upper" / "final.pt"
    ck = read_checkpoint(path)
    assert ck["stage"] == "joint_from_upper"
    assert ck["train_state"]["init"]["init"] == str(out / "upper" / "final.pt")  # not policy/final.pt
    up, wo_tr = (_sd(out / s / "final.pt") for s in ("upper", "joint_from_upper"))
    # stage 0 never trains the heads: upper's are the initial ones, joint_from_upper trains them
    assert not torch.equal(up["selection.frame_head.weight"], wo_tr["selection.frame_head.weight"])
    assert not torch.equal(up["backbone.head.proj.weight"], wo_tr["backbone.head.proj.weight"])


def test_transfer_keeps_the_other_datasets_selection_network_frozen(set_a, set_b):
    a_out, _ = set_a
    data_b, b_out = set_b
    policy_a = a_out / "policy" / "final.pt"
    recipe = recipe_from_dict(tiny_recipe(data_b, b_out, init_from={"selection": str(policy_a)},
                                          transfer={"epochs": 1}, **NO_BN))
    path = train_stage(recipe, "transfer", progress=False)
    a, b_up, tr = _sd(policy_a), _sd(b_out / "upper" / "final.pt"), _sd(path)
    sel = [k for k in tr if k.startswith("selection.") and not k.startswith("selection.classifier.")]
    assert sel and all(torch.equal(tr[k], a[k]) for k in sel)  # trunk, head norm and m/n heads of A
    assert tr["selection.classifier.weight"].shape[0] == 4 != a["selection.classifier.weight"].shape[0]
    assert torch.equal(tr["selection.classifier.weight"], b_up["selection.classifier.weight"])
    assert not torch.equal(tr["backbone.head.proj.weight"], b_up["backbone.head.proj.weight"])
    ck = read_checkpoint(path)
    assert ck["data"]["classes"] == read_checkpoint(b_out / "upper" / "final.pt")["data"]["classes"]
    assert ck["train_state"]["init"]["selection_init"] == str(policy_a)


def test_transfer_errors_name_the_recipe_key(set_a, set_b, tmp_path):
    a_out, _ = set_a
    data_b, b_out = set_b
    r = tiny_recipe(data_b, tmp_path / "run", init_from={"transfer": str(b_out / "upper" / "final.pt")}, **NO_BN)
    res = CliRunner().invoke(main, ["train", "transfer", str(write_recipe(r, tmp_path)), "--quiet"])
    assert res.exit_code == 2 and "init_from.selection=CKPT" in res.output and "Traceback" not in res.output
    other = tiny_recipe(data_b, tmp_path / "wide", model={"selection_width": 0.5})
    other_path = write_recipe(other, tmp_path, "wide.yaml")
    assert CliRunner().invoke(main, ["train", "upper", str(other_path), "--quiet"]).exit_code == 0
    bad = {**r, "output_dir": str(tmp_path / "wide"), "model": other["model"],
           "init_from": {"selection": str(a_out / "policy" / "final.pt")}}  # its upper: 0.5 wide
    res = CliRunner().invoke(main, ["train", "transfer", str(write_recipe(bad, tmp_path, "bad.yaml")), "--quiet"])
    assert res.exit_code == 2 and "selection_width: this model 0.5 vs checkpoint 0.35" in res.output
    res = CliRunner().invoke(main, ["train", "transfer", str(write_recipe(r, tmp_path)), "--quiet",
                                    "--set", "transfer.actions=best"])
    assert res.exit_code == 2 and "transfer.actions='best'" in res.output
