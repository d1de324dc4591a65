"""DDP: `torchrun --nproc_per_node=2 -m ada3d_edge.train all RECIPE` on CPU with gloo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ada3d_edge.train.checkpoint import read_checkpoint
from train_helpers import rows, tiny_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_synth_dataset, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_synth_dataset, tmp_path / "out")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ada3d_edge.train", "all", str(recipe), "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("upper", "policy", "joint"):
        ck = read_checkpoint(tmp_path / "out" / stage / "final.pt")
        # 16 videos, global batch 8 -> 8 videos and 2 steps of 4 per process
        assert ck["train_state"]["world_size"] == 2 and ck["step"] == 2
        (row,) = rows(tmp_path / "out" / stage / "metrics.csv")  # rank 0 alone writes
        assert row["seen_videos"] == "16"
    # rank-0-only logs: each stage announces itself once
    assert proc.stdout.count("[joint] wrote") + proc.stderr.count("[joint] wrote") == 1
