"""The paper's ablations at toy size: the stages (Table 5's "w/o Tr" = `joint_from_upper`, Table 3's
`transfer`: another dataset's selection network kept frozen) and `ada3d eval --table 3|5|6`."""
from __future__ import annotations

import json

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
    """Upper, policy, joint and Random FT on the tiny set a (4 frames, 32 px)."""
    out = tmp_path_factory.mktemp("set_a")
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, out, **NO_BN))
    for stage in ("upper", "policy", "joint", "random_ft"):
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


def _eval(args, tmp_path, name="t.json"):
    res = CliRunner().invoke(main, ["eval", *map(str, args), "--json", str(tmp_path / name), "--quiet"])
    assert res.exit_code == 0, res.output
    return res.output, json.loads((tmp_path / name).read_text())


def test_table5_rows_are_the_stage_checkpoints_at_3_clips(set_a, tiny_synth_dataset, tmp_path):
    from ada3d_edge.train.evaluate import evaluate

    out, recipe = set_a
    if not (out / "joint_from_upper" / "final.pt").is_file():
        train_stage(recipe, "joint_from_upper", progress=False)
    val = tiny_synth_dataset / "val.txt"
    text, res = _eval([out / "joint" / "final.pt", "--data", val, "--table", "5", "--upper", out / "upper" / "final.pt",
                       "--wo-ft", out / "policy" / "final.pt", "--wo-tr", out / "joint_from_upper" / "final.pt"],
                      tmp_path)
    assert res["num_clips"] == 3 and res["mark_columns"] == ["Tr", "FT"]
    names = [r["method"] for r in res["rows"]]
    assert names[0] == "Upper" and names[2:] == ["w/o FT (stage 1 only)", "w/o Tr (joint from Upper)", "Ada3D (both)"]
    assert [(r["marks"].get("Tr"), r["marks"].get("FT")) for r in res["rows"]] == [
        (None, None), (False, False), (True, False), (False, True), (True, True)]
    assert "| Method | Tr | FT | Acc (%) | GFLOPs/clip | # 3D | # Frame |" in text
    # w/o FT is the stage-1 checkpoint evaluated as a model: Table 1's Ada3D row of it, at 3 clips
    policy = evaluate(out / "policy" / "final.pt", val, num_clips=3, upper=out / "upper" / "final.pt", progress=False)
    t1 = {r["method"]: r for r in policy["rows"]}
    assert res["rows"][2]["metric"] == t1["Ada3D"]["metric"] and res["rows"][2]["gflops"] == t1["Ada3D"]["gflops"]
    assert res["rows"][0]["gflops"] == t1["Upper"]["gflops"] and res["rows"][0]["mean_frames"] == 4.0
    assert res["rows"][1]["checkpoint"] == str(out / "upper" / "final.pt")


def test_table6_one_learned_head_keeps_its_usage_and_random_ft_matches_table1(set_a, tiny_synth_dataset, tmp_path):
    from ada3d_edge.train.evaluate import evaluate

    out, _ = set_a
    val, joint, rf = tiny_synth_dataset / "val.txt", out / "joint" / "final.pt", out / "random_ft" / "final.pt"
    _, res = _eval([joint, "--data", val, "--table", "6", "--upper", out / "upper" / "final.pt"], tmp_path)
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows)[1] == "both random (Ada3D's backbone, no Random FT checkpoint)"
    ada = rows["Ada3D (both)"]
    assert rows["3D policy + random frames"]["mean_3d"] == ada["mean_3d"]       # the learned stage head
    assert rows["frame policy + random 3D"]["mean_frames"] == ada["mean_frames"]  # the learned frame head
    assert res["random_policy"]["stage_prob"] == pytest.approx(ada["mean_3d"] / 2)
    assert all(r["gflops"] > 0 for r in res["rows"])
    _, res = _eval([joint, "--data", val, "--table", "6", "--upper", out / "upper" / "final.pt", "--random-ft", rf],
                   tmp_path, "rf.json")
    t1 = evaluate(joint, val, num_clips=3, upper=out / "upper" / "final.pt", random_ft=rf, progress=False)
    rft = next(r for r in t1["rows"] if r["method"] == "Random FT")
    row = next(r for r in res["rows"] if r["method"] == "Random FT (both random)")
    assert (row["metric"], row["gflops"], row["mean_frames"]) == (rft["metric"], rft["gflops"], rft["mean_frames"])
    assert not any(r["method"].startswith("both random (") for r in res["rows"])


def test_table3_transfer_against_this_datasets_upper(set_a, set_b, tmp_path):
    a_out, _ = set_a
    data_b, b_out = set_b
    if not (b_out / "transfer" / "final.pt").is_file():
        recipe = recipe_from_dict(tiny_recipe(data_b, b_out, init_from={"selection": str(a_out / "policy" / "final.pt")},
                                              **NO_BN))
        train_stage(recipe, "transfer", progress=False)
    ckpt = b_out / "transfer" / "final.pt"
    res = CliRunner().invoke(main, ["eval", str(ckpt), "--data", str(data_b / "val.txt"), "--table", "3", "--quiet"])
    assert res.exit_code == 2 and "--table 3 needs --upper CKPT" in res.output
    text, res = _eval([ckpt, "--data", data_b / "val.txt", "--table", "3", "--upper", b_out / "upper" / "final.pt"],
                      tmp_path)
    assert [r["method"] for r in res["rows"]] == ["Upper", "Ours (transferred policies)"]
    assert res["transfer"]["selection_from"] == str(a_out / "policy" / "final.pt")
    assert res["transfer"]["selection_from_classes"] == 8 and res["num_clips"] == 2  # the recipe's clips
    up, ours = res["rows"]
    assert res["gflops_saving_vs_upper"] == pytest.approx(1 - ours["gflops"] / up["gflops"])
    assert "Policies from" in text and "8 classes, frozen" in text


def test_table_option_errors_before_any_work(set_a, tiny_synth_dataset, tmp_path):
    out, _ = set_a
    base = ["eval", str(out / "joint" / "final.pt"), "--data", str(tiny_synth_dataset / "val.txt"), "--quiet"]
    for extra, message in ((["--wo-ft", str(out / "policy" / "final.pt")], "add --table 5"),
                           (["--table", "5", "--plot", str(tmp_path / "f.png")], "leave it out with --table 5"),
                           (["--table", "6", "--wo-tr", str(out / "policy" / "final.pt")], "--table 6 does not use it"),
                           (["--table", "5", "--wo-ft", str(tmp_path / "gone.pt")], "gone.pt")):
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (extra, res.output)


def test_separation_note_says_when_the_data_cannot_separate_methods():
    from ada3d_edge.train.paper_tables import separation_note

    def res(*metrics):
        return {"metric": "top1", "rows": [{"metric": m} for m in metrics]}

    assert "cannot separate the methods" in separation_note(res(100.0, 99.5, 100.0))
    assert "within 0.5 points" in separation_note(res(90.0, 80.0, 80.5))
    assert separation_note(res(100.0, 80.0, 95.0)) is None
    near_chance = {**res(20.0, 12.5, 16.7), "num_classes": 8}
    assert "under twice chance" in separation_note(near_chance) and "chance 12.5%" in separation_note(near_chance)
    assert separation_note({**res(100.0, 80.0, 95.0), "num_classes": 8}) is None
    one_video = {**res(55.0, 55.0, 57.5), "num_videos": 40}  # 2.5 points = one of 40 videos
    assert "one video is 2.5 points" in separation_note(one_video)
    assert separation_note({**res(55.0, 55.0, 57.5), "num_videos": 400}) is None
