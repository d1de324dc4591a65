"""The reward's cost term from a table (policy.cost: usage | flops | latency) and the latency table it reads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from train_helpers import tiny_recipe, write_recipe

from ada3d_edge.cli import main
from ada3d_edge.flops import backbone_macs
from ada3d_edge.latency_lut import LatencyLut, load_checked_lut, read_lut, write_lut
from ada3d_edge.masks import all_masks
from ada3d_edge.models.selection import Actions
from ada3d_edge.models.specs import get_spec
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.costs import TableCost, make_cost
from ada3d_edge.train.rewards import Baseline, rewards

torch.set_num_threads(1)
T, K = 4, 2


def toy_latency(mask: str, frames: int) -> float:
    """A made-up latency (ms) with a fixed cost, per-frame costs by stage, and 2D slower at T' = 1."""
    per_frame = 1.0 + 0.6 * mask.count("1")
    return 0.5 + per_frame * frames + (1.5 if frames == 1 and mask == "00" else 0.0)


def upper_gflops(**overrides) -> float:
    """slow_tiny's Upper backbone GFLOPs at T frames, 32 px (what a bundle of it records)."""
    return backbone_macs(get_spec("slow_tiny", num_frames=T, **overrides), "1" * K, T, 32) / 1e9


def toy_lut(arch: str = "slow_tiny", num_frames: int = T, crop: int = 32, drop=(), gflops=None) -> LatencyLut:
    ms = {(m, f): toy_latency(m, f) for m in all_masks(K) for f in range(1, num_frames + 1) if (m, f) not in drop}
    ref = toy_latency("1" * K, num_frames)
    return LatencyLut(arch=arch, num_frames=num_frames, crop_size=crop, stages=("res4", "res5"),
                      cost={k: v / ref for k, v in ms.items()}, latency_ms=ms, machine={"cpu": "test"},
                      backend="ort", threads=1, upper_gflops=upper_gflops() if gflops is None else gflops)


def test_latency_reward_is_the_joint_table_cost_for_both_heads(tmp_path: Path) -> None:
    path = write_lut(toy_lut(), tmp_path / "lut.json")
    cost = make_cost("latency", "slow_tiny", get_spec("slow_tiny", num_frames=T), 32, str(path))
    frames = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    stages = torch.tensor([[1, 0], [1, 1], [0, 0], [0, 1], [1, 1]], dtype=torch.bool)
    correct = torch.tensor([True, True, True, False, True])
    r_u, r_v = rewards(correct, Actions(frames, stages), gamma=0.7, cost=cost)
    ref = toy_latency("11", T)  # Upper at T
    want = []
    for f, s, ok in zip(frames.tolist(), stages.tolist(), correct.tolist()):
        n, mask = sum(f), "".join(str(int(b)) for b in s)
        want.append(1 - toy_latency(mask, n) / ref if ok else -0.7)  # O(u) = O(v) = c(v, |u|)
    assert r_u.tolist() == pytest.approx(want) and r_v.tolist() == pytest.approx(want)
    assert r_u[1].item() == pytest.approx(0.0)  # Upper on all frames costs 1
    assert r_u[2] < r_u[4]  # in this table mask 00 at T'=1 is slower than 11 at T'=1: both heads see it


def test_flops_cost_comes_from_the_flops_module_and_usage_stays_the_default() -> None:
    spec = get_spec("slow_tiny", num_frames=T)
    cost = make_cost("flops", "slow_tiny", spec, 32)
    frames = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    stages = torch.tensor([[0, 1], [1, 1]], dtype=torch.bool)
    o_u, o_v = cost(frames, stages)
    ref = backbone_macs(spec, "11", T, 32)
    assert o_u.tolist() == pytest.approx([backbone_macs(spec, "01", 2, 32) / ref, 1.0]) and torch.equal(o_u, o_v)
    usage = rewards(torch.tensor([True, True]), Actions(frames, stages), 0.5)
    assert usage[0].tolist() == pytest.approx([1 - 2 / 4, 1 - 4 / 4])
    assert usage[1].tolist() == pytest.approx([1 - (1 / 2) ** 2, 0.0])
    assert recipe_from_dict(tiny_recipe(Path("."), Path("o")), check_required=False).policy.cost == "usage"


@pytest.mark.parametrize("mode", ["usage", "flops", "latency"])
def test_a_policy_step_trains_with_each_cost_mode(mode: str, tmp_path: Path) -> None:
    from ada3d_edge.models import Ada3DConfig, build_ada3d
    from ada3d_edge.train.stages import PolicyStep

    torch.manual_seed(0)
    model = build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=4, num_frames=T, selection_width=0.35,
                                    policy_size=32))
    model.backbone.eval()
    lut = str(write_lut(toy_lut(), tmp_path / "lut.json"))
    cost = make_cost(mode, "slow_tiny", model.backbone.spec, 32, lut if mode == "latency" else None)
    step = PolicyStep(model, gamma=0.5, baseline=Baseline("batch_mean"), train_backbone=False, cost=cost)
    head = model.selection.frame_head.weight
    before = head.detach().clone()
    opt = torch.optim.SGD(model.selection.parameters(), lr=0.5)
    loss, stats = step(torch.randn(6, 3, T, 32, 32), torch.randn(6, 3, T, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, head.detach())


def test_bad_tables_are_refused_naming_both_sides(tmp_path: Path) -> None:
    spec = get_spec("slow_tiny", num_frames=T)
    other = write_lut(toy_lut(arch="slow_r50", num_frames=8), tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"slow_r50 at T=8.*slow_tiny at T=4"):
        make_cost("latency", "slow_tiny", spec, 32, str(other))
    holey = write_lut(toy_lut(drop=[("01", 3)]), tmp_path / "holey.json")
    with pytest.raises(ValueError, match=r"lacks 1 of 16 configurations \(01/T'=3\)"):
        load_checked_lut(holey, "slow_tiny", T, K, 32)
    crop = write_lut(toy_lut(crop=64), tmp_path / "crop.json")
    with pytest.raises(ValueError, match="crop 64.*test_crop=32"):
        load_checked_lut(crop, "slow_tiny", T, K, 32)
    narrow = write_lut(toy_lut(gflops=upper_gflops(widths=(16, 32, 64, 128))), tmp_path / "narrow.json")
    with pytest.raises(ValueError, match="other widths or depths"):
        make_cost("latency", "slow_tiny", spec, 32, str(narrow))
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        read_lut(tmp_path / "junk.json")
    (tmp_path / "plain.json").write_text(json.dumps({"entries": []}))
    with pytest.raises(ValueError, match="is not a latency table"):
        read_lut(tmp_path / "plain.json")
    data = toy_lut().to_json()
    data["entries"][0]["cost"] = -1.0
    (tmp_path / "neg.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="positive"):
        read_lut(tmp_path / "neg.json")
    with pytest.raises(FileNotFoundError, match="ada3d bench BUNDLE --lut"):
        read_lut(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="needs policy.cost_lut"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, policy={"cost": "latency"}), check_required=False)
    with pytest.raises(ValueError, match="policy.cost='time' is not one of"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, policy={"cost": "time"}), check_required=False)


def test_train_refuses_a_mismatched_table_before_any_work(tmp_path: Path) -> None:
    other = write_lut(toy_lut(arch="slow_r50", num_frames=8), tmp_path / "other.json")
    recipe = write_recipe(tiny_recipe(tmp_path / "data", tmp_path / "run",
                                      policy={"cost": "latency", "cost_lut": str(other)}), tmp_path)
    res = CliRunner().invoke(main, ["train", "policy", str(recipe), "--quiet"])
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert line and "slow_r50 at T=8" in line[0] and "slow_tiny at T=4" in line[0]
    assert not (tmp_path / "run").exists()


def test_upper_at_all_frames_costs_one() -> None:
    lut = toy_lut()
    cost = TableCost(lut.cost, T, K)
    every = torch.tensor([[1] * T], dtype=torch.bool)
    assert cost.joint(every, torch.ones(1, K, dtype=torch.bool)).item() == pytest.approx(1.0)  # Upper = 1


def test_lut_from_bench_needs_every_configuration_timed() -> None:
    from ada3d_edge.latency_lut import lut_from_bench

    configs = [{"mask": m, "frames": f, "batch": 1, "status": "ok", "latency_ms": {"p50": toy_latency(m, f)}}
               for m in all_masks(K) for f in range(1, T + 1)]
    result = {"arch": "slow_tiny", "num_frames": T, "crop_size": 32, "stages": ["res4", "res5"], "configs": configs,
              "machine": {"cpu": "test", "backend": "ort", "threads": 1}, "bundle": "b", "command": "c"}
    lut = lut_from_bench({**result, "upper": {"gflops": 0.5}})
    assert lut.upper_gflops == 0.5 and lut_from_bench(result).upper_gflops is None
    assert lut.cost[("10", 2)] == pytest.approx(toy_latency("10", 2) / toy_latency("11", T))
    configs[5] = {**configs[5], "status": "error: boom"}
    bad = f"{configs[5]['mask']}/T'={configs[5]['frames']}"
    with pytest.raises(ValueError, match=rf"missing or failed: {bad} \(error: boom\)"):
        lut_from_bench(result)
