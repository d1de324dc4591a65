"""The recipes shipped in train/: every one loads, and the 16-frame ones are the paper's 16-frame setting."""
from __future__ import annotations

from pathlib import Path

import pytest

from ada3d_edge.flops import gflops
from ada3d_edge.models import get_spec
from ada3d_edge.train.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "train").glob("*.yaml"))
# Upper's GFLOPs at 16 frames @256 as the paper prints them: Table 4 (SlowOnly), Table 1 (I3D)
PAPER_16_FRAMES = {"slow_r50": 109.1, "i3d_r50": 117.3}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(path):
    recipe = load_recipe(path, check_required=False)
    assert recipe.data.num_frames >= 1 and recipe.output_dir


def test_16_frame_recipes_for_both_backbones_and_datasets():
    names = {p.name for p in RECIPES}
    assert {f"{d}_{a}_16x8.yaml" for d in ("kinetics", "activitynet") for a in PAPER_16_FRAMES} <= names


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem.endswith("_16x8")], ids=lambda p: p.name)
def test_16_frame_recipe_is_the_papers_setting(path):
    recipe = load_recipe(path, check_required=False)
    d = recipe.data
    assert (d.num_frames, d.stride, d.crop, d.test_crop, d.num_clips) == (16, 8, 224, 256, 10)
    assert d.multi_label == path.name.startswith("activitynet")
    spec = get_spec(recipe.model.arch, **recipe.model.backbone)
    assert not spec.temporal_pool  # the variant the paper's figures count, and the one that exports
    assert abs(gflops(spec, None, d.num_frames, d.test_crop) - PAPER_16_FRAMES[recipe.model.arch]) < 0.1
    assert "16x8" in recipe.output_dir
