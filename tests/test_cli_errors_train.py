"""Every bad input of `synth`, `flops`, `train`, `eval`, `sweep` and `demo` ends in one `Error:` line
that names the file or option and the fix, a non-zero exit and no traceback, and changes no file
outside the command's own output (issue 11, "Done when")."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import pytest
import torch
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.trainer import train_stage
from train_helpers import tiny_recipe, write_recipe

torch.set_num_threads(1)


class World(NamedTuple):
    """What the bad inputs are made of: a copy of the tiny dataset and two trained upper checkpoints."""

    root: Path         # everything below is inside it; the snapshot covers all of it
    data: Path         # tiny synthetic dataset
    recipe: Path       # a valid recipe whose output_dir is root/runs
    upper: Path        # runs/upper/final.pt
    other_arch: Path   # an upper checkpoint of another backbone width
    corrupt: Path      # a truncated checkpoint
    bad_list: Path     # val list + one corrupt video


@pytest.fixture(scope="module")
def world(tiny_synth_dataset, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("cli_errors")
    data = root / "data"
    shutil.copytree(tiny_synth_dataset, data)
    recipe = recipe_from_dict(tiny_recipe(data, root / "runs", data={"val_clips": 1, "num_clips": 1}))
    upper = train_stage(recipe, "upper", progress=False)
    wide = recipe_from_dict(tiny_recipe(data, root / "wide", model={"backbone": {"widths": [8, 16, 32, 64]}}))
    other_arch = train_stage(wide, "upper", progress=False)
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(upper.read_bytes()[:2000])
    (data / "bad.mp4").write_bytes(b"not a video")
    bad_list = data / "with_bad.txt"
    bad_list.write_text((data / "val.txt").read_text() + "bad.mp4 0\n")
    return World(root, data, write_recipe(recipe, root), upper, other_arch, corrupt, bad_list)


class Case(NamedTuple):
    args: Callable[[World], List[str]]
    says: Sequence[str]           # all of these are in the Error line (the file/option and the fix)
    own: Sequence[str] = ()       # paths (relative to World.root) the command may write: its own output


def _w(text: str, **extra: str) -> Callable[[World], List[str]]:
    """Arguments as one string with {root}, {data}, {recipe}, {upper}, ... filled in from the World."""
    def build(w: World) -> List[str]:
        fields = {**w._asdict(), **extra}
        return text.format(**{k: str(v) for k, v in fields.items()}).split()
    return build


CASES: Dict[str, Case] = {
    # synth
    "synth/classes": Case(_w("synth {root}/s --classes 5"), ["--classes", "4, 8, 12 or 16"]),
    "synth/not-empty": Case(_w("synth {data}"), ["data", "--overwrite"]),
    "synth/size": Case(_w("synth {root}/s --size 0"), ["--size", "x>=16"]),
    "synth/fps": Case(_w("synth {root}/s --fps -1"), ["--fps", "x>0"]),
    "synth/videos": Case(_w("synth {root}/s --videos-per-class 0"), ["--videos-per-class", "x>=1"]),
    "synth/frames": Case(_w("synth {root}/s --frames 1"), ["--frames", "x>=2"]),
    # flops
    "flops/arch": Case(_w("flops nope"), ["nope", "slow_r50"]),
    "flops/frames": Case(_w("flops slow_tiny --frames 0"), ["--frames"]),
    "flops/width": Case(_w("flops slow_tiny --policy-width -1"), ["--policy-width"]),
    # train
    "train/recipe-missing": Case(_w("train upper {root}/none.yaml"), ["none.yaml", "train/demo.yaml"]),
    "train/recipe-yaml": Case(_w("train upper {root}/broken.yaml"), ["broken.yaml", "not valid YAML"]),
    "train/recipe-list": Case(_w("train upper {root}/list.yaml"), ["list.yaml", "mapping"]),
    "train/set-key": Case(_w("train upper {recipe} --set optim.learning_rate=1"), ["optim.learning_rate", "optim.lr"]),
    "train/set-value": Case(_w("train upper {recipe} --set data.crop=big"), ["data.crop", "'big'"]),
    "train/set-range": Case(_w("train upper {recipe} --set data.crop=-4"), ["data.crop", "> 0"]),
    "train/set-form": Case(_w("train upper {recipe} --set data.crop"), ["--set", "key=value"]),
    "train/list-missing": Case(_w("train upper {recipe} --set data.train_list=gone.txt --output-dir {root}/o"),
                               ["gone.txt", "data.train_list"]),
    "train/previous-missing": Case(_w("train joint {recipe}"), ["policy/final.pt", "ada3d train policy",
                                                                "init_from.joint"]),
    "train/init-missing": Case(_w("train policy {recipe} --init-from {root}/gone.pt --output-dir {root}/o"),
                               ["gone.pt", "init_from.policy"]),
    "train/init-corrupt": Case(_w("train policy {recipe} --init-from {corrupt} --output-dir {root}/o"),
                               ["corrupt.pt"]),
    "train/init-other-arch": Case(_w("train policy {recipe} --init-from {other_arch} --output-dir {root}/o"),
                                  ["wide/upper/final.pt", "another model", "widths"]),
    "train/exists": Case(_w("train upper {recipe}"), ["runs/upper", "--resume", "--overwrite"]),
    "train/resume-missing": Case(_w("train policy {recipe} --resume"), ["last.pt", "without --resume"]),
    "train/random-policy": Case(_w("train random-ft {recipe} --random-policy frames=2"),
                                ["--random-policy", "[0, 1]"]),
    "train/random-ft-targets": Case(_w("train random-ft {recipe}"), ["--random-policy", "joint/final.pt"]),
    "train/unreadable": Case(_w("train upper {recipe} --set data.train_list=with_bad.txt --output-dir {root}/o"),
                             ["bad.mp4", "--max-bad-fraction"], own=["o"]),
    "train/max-bad": Case(_w("train upper {recipe} --max-bad-fraction 2"), ["--max-bad-fraction"]),
    "train/stage": Case(_w("train stage3 {recipe}"), ["stage3", "upper"]),
    # eval
    "eval/ckpt-missing": Case(_w("eval {root}/gone.pt --data {data}/val.txt"), ["gone.pt", "does not exist"]),
    "eval/ckpt-corrupt": Case(_w("eval {corrupt} --data {data}/val.txt"), ["corrupt.pt", "corrupt"]),
    "eval/ckpt-foreign": Case(_w("eval {data}/classes.txt --data {data}/val.txt"), ["classes.txt"]),
    "eval/list-missing": Case(_w("eval {upper} --data {data}/gone.txt"), ["gone.txt", "--data"]),
    "eval/classes-missing": Case(_w("eval {upper} --data {data}/val.txt --classes {root}/gone.txt"),
                                 ["gone.txt", "--classes"]),
    "eval/classes-other": Case(_w("eval {upper} --data {data}/val.txt --classes {root}/three.txt"),
                               ["three.txt", "classes"]),
    "eval/upper-other-arch": Case(_w("eval {upper} --data {data}/val.txt --upper {other_arch}"),
                                  ["wide/upper/final.pt", "--upper"]),
    "eval/unreadable": Case(_w("eval {upper} --data {bad_list}"), ["bad.mp4", "--max-bad-fraction"]),
    "eval/threshold": Case(_w("eval {upper} --data {data}/val.txt --threshold 1.5"), ["--threshold"]),
    "eval/device": Case(_w("eval {upper} --data {data}/val.txt --device cuda"), ["cuda", "cpu"]),
    "eval/json-dir": Case(_w("eval {upper} --data {data}/val.txt --json {data}"), ["--json"]),
    # sweep
    "sweep/gamma": Case(_w("sweep {recipe} --gamma 0.5,abc"), ["--gamma", "abc"]),
    "sweep/no-gamma": Case(_w("sweep {recipe}"), ["--gamma", "gammas"]),
    "sweep/negative": Case(_w("sweep {recipe} --gamma -1"), ["gamma", ">= 0"]),
    "sweep/recipe-missing": Case(_w("sweep {root}/none.yaml --gamma 1"), ["none.yaml"]),
    "sweep/set-key": Case(_w("sweep {recipe} --gamma 1 --set nope=1"), ["nope"]),
    # demo
    "demo/recipe": Case(_w("demo --workdir {root}/d --recipe {root}/none.yaml"), ["none.yaml", "--recipe"]),
    "demo/workdir-foreign": Case(_w("demo --workdir {data}"), ["--workdir", "new or empty folder"]),
    "demo/workdir-file": Case(_w("demo --workdir {recipe}"), ["--workdir"]),
}


def _snapshot(root: Path) -> Dict[str, Tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_error_line(world: World, name: str, monkeypatch) -> None:
    (world.root / "broken.yaml").write_text("model: [unclosed\n")
    (world.root / "list.yaml").write_text("- a\n- b\n")
    (world.root / "three.txt").write_text("a\nb\nc\n")
    case = CASES[name]
    monkeypatch.chdir(world.root)
    before = _snapshot(world.root)
    res = CliRunner().invoke(main, case.args(world))
    output = res.output
    assert res.exit_code not in (0, None), output
    assert "Traceback" not in output and not isinstance(res.exception, (TypeError, AttributeError, KeyError)), \
        output + repr(res.exception)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for text in case.says:
        assert text in errors[0], errors[0]
    after = _snapshot(world.root)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert {p for p in changed if not any(p == o or p.startswith(o + "/") for o in case.own)} == set(), changed
