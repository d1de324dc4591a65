"""Training stages end to end on the tiny synthetic dataset: upper -> policy -> joint, Random FT,
resume after a crash, eval output, sweep, multi-label, and the errors users see first."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.models.backbone import is_config_bn_key
from ada3d_edge.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.trainer import train_stage
from train_helpers import rows, tiny_recipe, write_recipe

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tiny_synth_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ada3d_run")
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, out))
    for stage in ("upper", "policy", "joint"):
        train_stage(recipe, stage, progress=False)
    return out, recipe


def test_upper_policy_joint_write_checkpoints_and_metrics(trained):
    out, _ = trained
    for stage in ("upper", "policy", "joint"):
        d = out / stage
        assert {"config.yaml", "last.pt", "final.pt", "metrics.csv"} <= {p.name for p in d.iterdir()}
        ck = read_checkpoint(d / "final.pt")
        assert ck["stage"] == stage and ck["epoch"] == 1 and ck["step"] == 2  # 16 videos / batch 8
        assert ck["data"]["classes"][0] == "red_circle_striped" and ck["data"]["num_frames"] == 4
        assert read_checkpoint(d / "last.pt")["optimizer"] is not None
        (row,) = rows(d / "metrics.csv")
        assert row["epoch"] == "1" and row["val_metric"] != "" and row["bad_videos"] == "0"
        assert yaml.safe_load((d / "config.yaml").read_text())["data"]["num_frames"] == 4
    upper = read_checkpoint(out / "upper" / "final.pt")
    assert "val_selection_metric" in upper["metrics"]  # MobileNetV2 pretrained as a 2D classifier
    assert float(rows(out / "policy" / "metrics.csv")[0]["loss_cls"]) == 0.0  # backbone frozen
    assert float(rows(out / "joint" / "metrics.csv")[0]["loss_cls"]) > 0.0
    # stage 1 leaves the backbone untouched; stage 2 changes it
    up, pol, joint = (load_model(out / s / "final.pt")[0] for s in ("upper", "policy", "joint"))
    key = "backbone.head.proj.weight"
    assert torch.equal(up.state_dict()[key], pol.state_dict()[key])
    assert not torch.equal(pol.state_dict()[key], joint.state_dict()[key])
    assert not torch.equal(up.state_dict()["selection.frame_head.weight"],
                           pol.state_dict()["selection.frame_head.weight"])
    # every configuration's BN statistics measured after upper and again after joint
    assert up.backbone.bn_calibrated.all() and joint.backbone.bn_calibrated.all()
    bn = "backbone.stages.3.blocks.0.bn_a.config_var"
    assert torch.equal(up.state_dict()[bn], pol.state_dict()[bn])
    assert not torch.equal(pol.state_dict()[bn], joint.state_dict()[bn])


def test_policy_stage_calibrates_an_uncalibrated_backbone_first(trained, tmp_path):
    out, _ = trained
    ck = read_checkpoint(out / "upper" / "final.pt")
    ck["model"] = {k: v for k, v in ck["model"].items() if not is_config_bn_key(k)}  # an older checkpoint
    old = save_checkpoint(tmp_path / "old_upper.pt", ck)
    assert not load_model(old)[0].backbone.bn_calibrated.any()
    recipe = recipe_from_dict(tiny_recipe(Path(ck["recipe"]["data"]["root"]), tmp_path / "run",
                                          init_from={"policy": str(old)}))
    pol, _ = load_model(train_stage(recipe, "policy", progress=False))
    assert pol.backbone.bn_calibrated.all()
    off = recipe_from_dict(tiny_recipe(Path(ck["recipe"]["data"]["root"]), tmp_path / "off",
                                       init_from={"policy": str(old)}, bn_calibration={"batches": 0}))
    assert not load_model(train_stage(off, "policy", progress=False))[0].backbone.bn_calibrated.any()


def test_random_ft_and_eval_table(trained, tmp_path):
    out, recipe = trained
    train_stage(recipe, "random_ft", progress=False)  # usage targets default to the joint model's
    ck = read_checkpoint(out / "random_ft" / "final.pt")
    joint = read_checkpoint(out / "joint" / "final.pt")
    assert ck["train_state"]["random_policy"]["frames"] == pytest.approx(joint["metrics"]["val_frames_frac"])
    js = tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["eval", str(out / "joint" / "final.pt"), "--data",
                                    str(Path(recipe.data.root) / "val.txt"), "--random-ft",
                                    str(out / "random_ft" / "final.pt"), "--upper", str(out / "upper" / "final.pt"),
                                    "--json", str(js), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "| Upper |" in res.output and "| Random FT |" in res.output and "static" in res.output
    r = json.loads(js.read_text())
    assert [row["method"] for row in r["rows"]] == ["Upper", "Random", "Random FT", "Ada3D"]
    for row in r["rows"]:
        assert {"metric", "gflops", "gflops_backbone", "gflops_selection", "includes_selection",
                "mean_3d", "mean_frames"} <= set(row)
        assert row["includes_selection"] == (row["method"] != "Upper")
    assert r["rows"][0]["mean_frames"] == 4 and r["rows"][0]["mean_3d"] == 2
    assert r["metric"] == "top1" and r["num_videos"] == 8 and r["num_clips"] == 2
    assert r["upper_checkpoint"].endswith("final.pt") and "Upper and Random run" in res.output
    assert len(r["per_class"]) == 8 and set(r["by_kind"]) == {"static", "motion"}
    assert {"class", "kind", "mean_3d", "mean_frames"} <= set(r["per_class"][0])
    assert {"frame_prob", "stage_prob"} <= set(r["random_policy"])


@pytest.mark.parametrize("selection_optimizer", ["sgd", "adamw"])
def test_resume_after_crash_finishes_the_same_epochs(tiny_synth_dataset, tmp_path, selection_optimizer):
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, tmp_path, optim={
        "epochs": 3, "selection_optimizer": selection_optimizer}))

    def crash(epoch, i, step):
        if epoch == 1 and i == 0:
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected crash"):
        train_stage(recipe, "upper", progress=False, on_step=crash)
    d = tmp_path / "upper"
    assert read_checkpoint(d / "last.pt")["epoch"] == 1 and not (d / "final.pt").exists()
    res = CliRunner().invoke(main, ["train", "upper", str(write_recipe(recipe, tmp_path)), "--resume", "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"resumed from {d / 'last.pt'} (1 of 3 epochs done; first init: scratch)" in res.output
    assert ", init: scratch" not in res.output
    ck = read_checkpoint(d / "final.pt")
    assert ck["epoch"] == 3 and ck["step"] == 6
    assert [r["epoch"] for r in rows(d / "metrics.csv")] == ["1", "2", "3"]


def test_sweep_writes_plot_and_points(trained, tmp_path):
    out, recipe = trained
    r = recipe_from_dict(tiny_recipe(Path(recipe.data.root), tmp_path,
                                     init_from={"policy": str(out / "upper" / "final.pt")}))
    res = CliRunner().invoke(main, ["sweep", str(write_recipe(r, tmp_path)), "--gamma", "0.2,1.0", "--quiet"])
    assert res.exit_code == 0, res.output
    pts = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"]
    assert [p["gamma"] for p in pts] == [0.2, 1.0]
    assert all(p["random_ft_metric"] is not None for p in pts)
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000
    assert len(rows(tmp_path / "sweep" / "sweep.csv")) == 2


def test_multi_label_trains_with_bce_and_evaluates_map(tiny_synth_dataset, tmp_path):
    src = (tiny_synth_dataset / "train.txt").read_text().split("\n")
    lines = [f"{ln.split()[0]} {ln.split()[1]},{(int(ln.split()[1]) + 1) % 8}" if i % 2 else ln
             for i, ln in enumerate(l for l in src if l.strip())]
    (tmp_path / "ml.txt").write_text("\n".join(lines) + "\n")
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, tmp_path / "run",
                                          data={"train_list": str(tmp_path / "ml.txt"),
                                                "val_list": str(tmp_path / "ml.txt")}))
    train_stage(recipe, "upper", progress=False)
    final = train_stage(recipe, "policy", progress=False)
    assert read_checkpoint(final)["data"]["multi_label"] is True
    res = CliRunner().invoke(main, ["eval", str(final), "--data", str(tmp_path / "ml.txt"), "--root",
                                    str(tiny_synth_dataset), "--classes",
                                    str(tiny_synth_dataset / "classes.txt"), "--clips", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "| Method | mAP (%)" in res.output


def test_clear_errors_before_any_work(tiny_synth_dataset, tmp_path):
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, tmp_path / "out"))
    path = write_recipe(recipe, tmp_path)
    run = CliRunner().invoke
    res = run(main, ["train", "upper", str(path), "--set", "data.train_list=missing.txt"])
    assert res.exit_code == 2 and "data.train_list" in res.output and "missing.txt" in res.output
    assert not (tmp_path / "out").exists()
    res = run(main, ["train", "upper", str(path), "--set", "optim.learning_rate=0.1"])
    assert res.exit_code == 2 and "unknown key 'optim.learning_rate'" in res.output and "optim.lr" in res.output
    bare = tmp_path / "bare.yaml"
    bare.write_text("model: {arch: slow_tiny}\n")
    res = run(main, ["train", "upper", str(bare)])
    assert res.exit_code == 2 and "missing required key(s)" in res.output and "data.root" in res.output
    res = run(main, ["train", "joint", str(path)])
    assert res.exit_code == 2 and "policy/final.pt does not exist" in res.output
    res = run(main, ["train", "upper", str(path), "--resume"])
    assert res.exit_code == 2 and "last.pt does not exist" in res.output
    res = run(main, ["train", "random-ft", str(path), "--random-policy", "frames=2"])
    assert res.exit_code == 2 and "must be in [0, 1]" in res.output
    res = run(main, ["eval", str(tmp_path / "nope.pt"), "--data", str(tiny_synth_dataset / "val.txt")])
    assert res.exit_code == 2 and "nope.pt does not exist" in res.output


def test_sigkilled_run_resumes_from_its_last_checkpoint(tiny_synth_dataset, tmp_path):
    """A real kill (SIGKILL, mid-run, possibly mid-write): last.pt stays readable and --resume finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    epochs = 6
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, tmp_path, optim={"epochs": epochs}))
    path = write_recipe(recipe, tmp_path)
    d = tmp_path / "upper"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ada3d_edge.cli", "train", "upper", str(path), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (d / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    if (d / "final.pt").exists():
        pytest.skip("the run finished before it could be killed (machine too fast for this test)")
    killed_at = read_checkpoint(d / "last.pt")["epoch"]
    assert 1 <= killed_at < epochs
    res = CliRunner().invoke(main, ["train", "upper", str(path), "--resume", "--quiet"])
    assert res.exit_code == 0, res.output
    assert read_checkpoint(d / "final.pt")["epoch"] == epochs
    assert [int(r["epoch"]) for r in rows(d / "metrics.csv")] == list(range(1, epochs + 1))


def test_train_refuses_an_earlier_run_and_overwrite_replaces_only_its_own_files(trained, tmp_path):
    out, recipe = trained
    r = recipe_from_dict(tiny_recipe(Path(recipe.data.root), tmp_path / "run"))
    path = write_recipe(r, tmp_path)
    run = CliRunner().invoke
    assert run(main, ["train", "upper", str(path), "--quiet"]).exit_code == 0
    d = tmp_path / "run" / "upper"
    (d / "notes.txt").write_text("mine")
    (d / "mine").mkdir()
    (d / "mine" / "keep.txt").write_text("mine too")
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    res = run(main, ["train", "upper", str(path), "--set", "optim.epochs=2"])
    assert res.exit_code == 2
    assert str(d) in res.output and "--resume" in res.output and "--overwrite" in res.output
    assert "final.pt" in res.output and "Traceback" not in res.output
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before  # nothing touched
    res = run(main, ["train", "all", str(path)])  # `all` checks every stage before training any
    assert res.exit_code == 2 and str(d) in res.output and not (tmp_path / "run" / "policy").exists()
    res = run(main, ["train", "upper", str(path), "--resume", "--overwrite"])
    assert res.exit_code == 2 and "one of them" in res.output
    res = run(main, ["train", "upper", str(path), "--overwrite", "--set", "optim.epochs=2", "--quiet"])
    assert res.exit_code == 0, res.output
    assert read_checkpoint(d / "final.pt")["epoch"] == 2
    assert [r["epoch"] for r in rows(d / "metrics.csv")] == ["1", "2"]
    assert (d / "notes.txt").read_text() == "mine" and (d / "mine" / "keep.txt").read_text() == "mine too"


def test_sweep_refuses_an_earlier_sweep_and_resume_reuses_it(trained, tmp_path):
    out, recipe = trained
    r = recipe_from_dict(tiny_recipe(Path(recipe.data.root), tmp_path,
                                     init_from={"policy": str(out / "upper" / "final.pt")}))
    path = write_recipe(r, tmp_path)
    run = CliRunner().invoke
    assert run(main, ["sweep", str(path), "--gamma", "0.5", "--no-random-ft", "--quiet"]).exit_code == 0
    joint = tmp_path / "sweep" / "gamma_0.5" / "joint" / "final.pt"
    stamp = joint.stat().st_mtime_ns
    res = run(main, ["sweep", str(path), "--gamma", "0.5", "--no-random-ft", "--quiet"])
    assert res.exit_code == 2 and "gamma_0.5" in res.output and "--resume" in res.output
    res = run(main, ["sweep", str(path), "--gamma", "0.5", "--no-random-ft", "--resume", "--quiet"])
    assert res.exit_code == 0, res.output
    assert joint.stat().st_mtime_ns == stamp  # reused, not retrained
    assert (tmp_path / "sweep" / "sweep.json").is_file()


def _list_with_a_bad_video(root: Path, folder: Path) -> Path:
    """val.txt of `root` with absolute paths plus one corrupt video (9 lines, 1 unreadable)."""
    (folder / "bad.mp4").write_bytes(b"not a video")
    lines = [f"{root / ln.split()[0]} {ln.split()[1]}" for ln in (root / "val.txt").read_text().splitlines()
             if ln.strip()]
    path = folder / "with_bad.txt"
    path.write_text("\n".join(lines + [f"{folder / 'bad.mp4'} 0"]) + "\n")
    return path


def test_eval_stops_on_unreadable_videos_like_training_and_counts_them(trained, tmp_path):
    out, recipe = trained
    data = _list_with_a_bad_video(Path(recipe.data.root), tmp_path)
    args = ["eval", str(out / "joint" / "final.pt"), "--data", str(data), "--classes",
            str(Path(recipe.data.root) / "classes.txt"), "--clips", "1", "--quiet"]
    res = CliRunner().invoke(main, args)  # the recipe's data.max_bad_fraction: 0.0
    assert res.exit_code == 1, res.output
    error = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and "bad.mp4" in error[0] and "--max-bad-fraction" in error[0]
    assert "Traceback" not in res.output
    res = CliRunner().invoke(main, args + ["--max-bad-fraction", "0.2"])
    assert res.exit_code == 0, res.output
    assert "8 videos x 1 clips, 1 unreadable videos skipped" in res.output


def test_train_max_bad_fraction_option(trained, tmp_path):
    out, recipe = trained
    data = _list_with_a_bad_video(Path(recipe.data.root), tmp_path)
    r = recipe_from_dict(tiny_recipe(Path(recipe.data.root), tmp_path / "run", data={"train_list": str(data)}))
    path = write_recipe(r, tmp_path)
    res = CliRunner().invoke(main, ["train", "upper", str(path), "--quiet"])
    assert res.exit_code == 1 and "bad.mp4" in res.output and "--max-bad-fraction" in res.output
    res = CliRunner().invoke(main, ["train", "upper", str(path), "--quiet", "--max-bad-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert sum(int(r["bad_videos"]) for r in rows(tmp_path / "run" / "upper" / "metrics.csv")) == 1


def test_ctrl_c_says_where_last_pt_is_and_how_to_resume(trained, tmp_path, monkeypatch):
    import shlex

    from ada3d_edge.train import trainer

    out, recipe = trained
    r = recipe_from_dict(tiny_recipe(Path(recipe.data.root), tmp_path / "run", optim={"epochs": 2}))
    path = write_recipe(r, tmp_path)
    real = trainer.Trainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(trainer.Trainer, "train_epoch", interrupted)
    res = CliRunner().invoke(main, ["train", "all", str(path), "--set", "seed=3", "--quiet"])
    assert res.exit_code == 130 and "Aborted" not in res.stderr
    last = tmp_path / "run" / "upper" / "last.pt"
    assert f"Interrupted: {last} holds upper after epoch 1 of 2; continue with: " in res.stderr
    commands = res.stderr.strip().split("continue with: ")[1].split(" && ")
    assert commands[0] == f"ada3d train upper {path} --set seed=3 --quiet --resume"
    assert [shlex.split(c)[2] for c in commands] == ["upper", "policy", "joint"]
    monkeypatch.setattr(trainer.Trainer, "train_epoch", real)
    res = CliRunner().invoke(main, shlex.split(commands[0])[1:])
    assert res.exit_code == 0, res.output
    assert read_checkpoint(tmp_path / "run" / "upper" / "final.pt")["epoch"] == 2


def test_eval_caption_says_costs_more_when_ada3d_is_dearer(trained):
    from ada3d_edge.train.evaluate import evaluate, format_table

    out, recipe = trained
    res = evaluate(out / "joint" / "final.pt", Path(recipe.data.root) / "val.txt", num_clips=1, progress=False)
    extra = res["rows"][-1]["gflops"] / res["rows"][0]["gflops"] - 1  # the tiny selection net costs more
    assert extra > 0
    text = format_table(res)
    assert f"Ada3D costs {100 * extra:.1f}% more GFLOPs than Upper." in text and "saves -" not in text
    assert "Ada3D saves 30.9% GFLOPs vs Upper." in format_table({**res, "gflops_saving_vs_upper": 0.309})
