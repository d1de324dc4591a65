"""mmaction2 checkpoints: key layout, config checks, safe loading, and `ada3d train upper` from one.

No download: files are written here in mmaction2's layout, derived from its source (mmaction2 1.2.0
`models/backbones/resnet3d.py`, `resnet3d_slowonly.py`, `heads/i3d_head.py`, mmcv's `ConvModule`,
mmengine's `Runner.save_checkpoint`) and the configs `slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb`
and `i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb`. `mmaction2_forward` is
ResNet3d's forward written from that source, reading the file's own keys: the reference that our
imported model must match.
"""
from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from ada3d_edge.models import CheckpointMismatchError, build_backbone, load_pretrained
from ada3d_edge.models.mmaction import read_backbone_config

torch.set_num_threads(1)

R50 = (3, 4, 6, 3)
SLOWONLY = dict(type="ResNet3dSlowOnly", depth=50, lateral=False, conv1_kernel=(1, 7, 7), conv1_stride_t=1,
                pool1_stride_t=1, inflate=(0, 0, 1, 1), norm_eval=False,
                pretrained="https://download.pytorch.org/models/resnet50-11ad3fa6.pth")
I3D = dict(type="ResNet3d", pretrained2d=True, pretrained="torchvision://resnet50", depth=50, conv1_kernel=(5, 7, 7),
           conv1_stride_t=2, pool1_stride_t=2, conv_cfg=dict(type="Conv3d"), norm_eval=False,
           inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)), zero_init_residual=False)
Inflate = Union[int, Sequence[int]]


def mmaction2_state(depth: Sequence[int] = R50, base: int = 64, conv1_kernel=(1, 7, 7),
                    inflate: Sequence[Inflate] = (0, 0, 1, 1), inflate_style: str = "3x1x1",
                    classes: int = 400, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A Recognizer3D state dict as mmaction2 builds it (ResNet3d + I3DHead), random but well scaled."""
    g = torch.Generator().manual_seed(seed)
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def conv_module(name: str, cout: int, cin: int, kernel: Tuple[int, int, int]) -> None:
        fan_in = cin * kernel[0] * kernel[1] * kernel[2]
        sd[f"{name}.conv.weight"] = torch.randn(cout, cin, *kernel, generator=g) * (2.0 / fan_in) ** 0.5
        sd[f"{name}.bn.weight"] = torch.rand(cout, generator=g) + 0.5
        sd[f"{name}.bn.bias"] = torch.randn(cout, generator=g) * 0.1
        sd[f"{name}.bn.running_mean"] = torch.randn(cout, generator=g) * 0.1
        sd[f"{name}.bn.running_var"] = torch.rand(cout, generator=g) + 0.5
        sd[f"{name}.bn.num_batches_tracked"] = torch.tensor(1000)

    conv_module("backbone.conv1", base, 3, tuple(conv1_kernel))
    cin = base
    for i, blocks in enumerate(depth):
        planes = base * 2 ** i
        flags = inflate[i] if isinstance(inflate[i], (tuple, list)) else (inflate[i],) * blocks
        for j in range(blocks):
            p = f"backbone.layer{i + 1}.{j}"
            t1 = 3 if flags[j] and inflate_style == "3x1x1" else 1
            t2 = 3 if flags[j] and inflate_style == "3x3x3" else 1
            conv_module(f"{p}.conv1", planes, cin, (t1, 1, 1))
            conv_module(f"{p}.conv2", planes, planes, (t2, 3, 3))
            conv_module(f"{p}.conv3", planes * 4, planes, (1, 1, 1))
            if j == 0 and (i > 0 or cin != planes * 4):
                conv_module(f"{p}.downsample", planes * 4, cin, (1, 1, 1))
            cin = planes * 4
    sd["cls_head.fc_cls.weight"] = torch.randn(classes, cin, generator=g) * 0.1
    sd["cls_head.fc_cls.bias"] = torch.randn(classes, generator=g) * 0.1
    return sd


def mmaction2_forward(sd: Dict[str, torch.Tensor], clip: torch.Tensor, depth: Sequence[int] = R50,
                      conv1_stride_t: int = 1, pool1_stride_t: int = 1,
                      with_pool2: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of mmaction2's ResNet3d + I3DHead in eval mode, from the file's keys.

    ConvModule = conv (padding (k-1)//2, no bias) -> BN3d -> ReLU (none on conv3 and downsample);
    stem stride (conv1_stride_t, 2, 2), max-pool (1,3,3) stride (pool1_stride_t, 2, 2) padding
    (0,1,1); style 'pytorch': the spatial stride on conv2; pool2 (2,1,1) after layer1 when with_pool2;
    head: adaptive average pool, fc_cls.
    """
    def conv_module(x, name, stride=(1, 1, 1), relu=True):
        w = sd[f"{name}.conv.weight"]
        x = F.conv3d(x, w, None, stride, tuple((k - 1) // 2 for k in w.shape[2:]))
        x = F.batch_norm(x, sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"],
                         sd[f"{name}.bn.weight"], sd[f"{name}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(x) if relu else x

    x = conv_module(clip, "backbone.conv1", (conv1_stride_t, 2, 2))
    x = F.max_pool3d(x, (1, 3, 3), (pool1_stride_t, 2, 2), (0, 1, 1))
    for i, blocks in enumerate(depth):
        for j in range(blocks):
            p, s = f"backbone.layer{i + 1}.{j}", 2 if i > 0 and j == 0 else 1
            y = conv_module(x, f"{p}.conv1")
            y = conv_module(y, f"{p}.conv2", (1, s, s))
            y = conv_module(y, f"{p}.conv3", relu=False)
            if f"{p}.downsample.conv.weight" in sd:
                x = conv_module(x, f"{p}.downsample", (1, s, s), relu=False)
            x = F.relu(x + y)
        if i == 0 and with_pool2:
            x = F.max_pool3d(x, (2, 1, 1), (2, 1, 1))
    return x, F.linear(F.adaptive_avg_pool3d(x, 1).flatten(1), sd["cls_head.fc_cls.weight"], sd["cls_head.fc_cls.bias"])


def config_text(backbone: dict) -> str:
    """`meta['cfg']` as mmengine writes it (`Config.pretty_text`): the merged config as Python."""
    model = dict(type="Recognizer3D", backbone=backbone,
                 cls_head=dict(type="I3DHead", in_channels=2048, num_classes=400, spatial_type="avg",
                               dropout_ratio=0.5, average_clips="prob"),
                 data_preprocessor=dict(type="ActionDataPreprocessor", mean=[123.675, 116.28, 103.53],
                                        std=[58.395, 57.12, 57.375], format_shape="NCTHW"))
    return ("default_scope = 'mmaction'\n"
            f"model = {_as_dict_call(model)}\n"
            "train_pipeline = [\n    dict(type='DecordInit', io_backend='disk'),\n"
            "    dict(clip_len=8, frame_interval=8, num_clips=1, type='SampleFrames'),\n]\n"
            "work_dir = './work_dirs/slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb'\n")


def _as_dict_call(v) -> str:
    if isinstance(v, dict):
        return "dict(" + ", ".join(f"{k}={_as_dict_call(x)}" for k, x in v.items()) + ")"
    return repr(v)


def mmengine_checkpoint(state: Dict[str, torch.Tensor], backbone: Union[dict, None], **extra) -> dict:
    """What mmengine's Runner.save_checkpoint writes, after mmaction2's publish_model.py (which drops
    message_hub, optimizer and param_schedulers): `meta` + `state_dict`. `meta` holds numpy values as
    training metadata does (hook_msgs' best_score, an array of accuracies)."""
    meta = {"epoch": 256, "iter": 240384, "seed": 0, "time": "20220901_120000",
            "experiment_name": "slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb_20220901_120000",
            "mmengine_version": "0.10.7", "dataset_meta": {},
            "hook_msgs": {"best_score": np.float64(0.7416), "best_ckpt": "best_acc_top1_epoch_256.pth"},
            "val_acc": np.array([0.71, 0.74], dtype=np.float32), "iters_per_epoch": np.int64(939)}
    if backbone is not None:
        meta["cfg"] = config_text(backbone)
    return {"meta": meta, "state_dict": state, **extra}


def _save(tmp_path: Path, ckpt: dict, name: str = "mmaction2.pth") -> Path:
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def _clip(t: int = 8, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, t, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_forward_matches(model, sd, clip, **ref):
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(clip)
        logits = model.forward_head(feats)
        ref_feats, ref_logits = mmaction2_forward(sd, clip, **ref)
    assert feats.shape == ref_feats.shape
    assert (feats - ref_feats).abs().max().item() <= 1e-5
    assert (logits - ref_logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch,backbone,state_kw,temporal_pool,ref", [
    ("slow_r50", SLOWONLY, {}, False, {}),
    ("i3d_r50", {**I3D, "conv1_stride_t": 1, "pool1_stride_t": 1},
     {"conv1_kernel": (5, 7, 7), "inflate": I3D["inflate"]}, True, {"with_pool2": True}),
    ("i3d_r50", {**I3D, "conv1_stride_t": 1, "pool1_stride_t": 1, "with_pool2": False},
     {"conv1_kernel": (5, 7, 7), "inflate": I3D["inflate"]}, False, {}),
], ids=["slowonly", "i3d_with_pool2", "i3d_no_pool2"])
def test_full_size_checkpoint_matches_mmaction2_forward(tmp_path, arch, backbone, state_kw, temporal_pool, ref):
    sd = mmaction2_state(**state_kw)
    path = _save(tmp_path, mmengine_checkpoint(sd, backbone))
    model = build_backbone(arch, num_classes=400, temporal_pool=temporal_pool)
    info = load_pretrained(model, path)
    assert info["source"] == "mmaction2" and info["notes"] == [] and info["reset_head"] == []
    _assert_forward_matches(model, sd, _clip(), **ref)


def test_zoo_i3d_config_temporal_strides_refused_unless_ignored(tmp_path):
    """The I3D zoo config trains with conv1_stride_t=2, pool1_stride_t=2 and with_pool2: weights fit
    i3d_r50 with temporal_pool=True, but our backbones keep every frame, so loading needs consent."""
    sd = mmaction2_state(base=8, conv1_kernel=(5, 7, 7), inflate=I3D["inflate"])
    path = _save(tmp_path, mmengine_checkpoint(sd, I3D))
    plain = build_backbone("i3d_r50", num_classes=400, widths=(8, 16, 32, 64), stem_width=8)
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(plain, path)
    msg = str(e.value)
    assert "conv1_stride_t=2, pool1_stride_t=2: i3d_r50 has no temporal stride" in msg
    assert "with_pool2=True" in msg and "model.backbone.temporal_pool: true" in msg
    pooled = build_backbone("i3d_r50", num_classes=400, widths=(8, 16, 32, 64), stem_width=8, temporal_pool=True)
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(pooled, path)
    assert "with_pool2" not in str(e.value) and "ignore_temporal_strides=True" in str(e.value)
    info = load_pretrained(pooled, path, ignore_temporal_strides=True)
    assert "ignored the file's temporal strides (conv1_stride_t=2, pool1_stride_t=2)" in info["notes"][0]
    # the weights are in exactly; the network is mmaction2's without its temporal strides
    _assert_forward_matches(pooled, sd, _clip(), with_pool2=True)
    with torch.no_grad():
        strided, _ = mmaction2_forward(sd, _clip(), conv1_stride_t=2, pool1_stride_t=2, with_pool2=True)
    assert strided.shape[2] == 1 and pooled.forward_features(_clip()).shape[2] == 4


def test_mmaction2_v0_defaults_and_files_without_config(tmp_path):
    """0.x configs that leave ResNet3d's strides unset trained with its 0.x defaults (2, 2); a file
    without any config loads on its kernels alone and says what it could not check."""
    sd = mmaction2_state(base=8, conv1_kernel=(5, 7, 7), inflate=I3D["inflate"])
    v0 = {k: v for k, v in I3D.items() if k not in ("conv1_stride_t", "pool1_stride_t")}
    # 0.x wrote cfg.text: each file of the _base_ chain after its path, bases first (mmcv merges them)
    text = (f"/work/mmaction2/configs/_base_/models/i3d_r50.py\n{config_text(v0)}"
            "/work/mmaction2/configs/recognition/i3d/i3d_r50_32x2x1_100e_kinetics400_rgb.py\n"
            "_base_ = ['../../_base_/models/i3d_r50.py']\nmodel = dict(backbone=dict(pretrained=None))\n")
    meta0 = {"mmcv_version": "1.3.1", "time": "Mon Jul  6 14:00:00 2020", "epoch": 100, "iter": 93800,
             "mmaction_version": "0.6.0+f0f5da5", "config": text, "hook_msgs": {"best_score": np.float64(0.7268)}}
    path = _save(tmp_path, {"meta": meta0, "state_dict": sd}, "v0.pth")
    model = build_backbone("i3d_r50", num_classes=400, widths=(8, 16, 32, 64), stem_width=8, temporal_pool=True)
    with pytest.raises(CheckpointMismatchError, match="conv1_stride_t=2, pool1_stride_t=2"):
        load_pretrained(model, path)
    merged = read_backbone_config(meta0)
    assert merged["pretrained"] is None and merged["conv1_kernel"] == (5, 7, 7)  # child over base
    bare = _save(tmp_path, {"meta": {"epoch": 100}, "state_dict": sd}, "bare.pth")
    info = load_pretrained(model, bare)
    assert "holds no config" in info["notes"][0] and "conv1_stride_t" in info["notes"][0]
    _assert_forward_matches(model, sd, _clip(), with_pool2=True)


def test_mismatched_arch_is_refused_with_the_kernels_named(tmp_path):
    thin = dict(num_classes=400, widths=(8, 16, 32, 64), stem_width=8)
    slow = _save(tmp_path, mmengine_checkpoint(mmaction2_state(base=8), SLOWONLY), "slow.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(build_backbone("i3d_r50", **thin), slow)
    msg = str(e.value)
    assert "(mmaction2 keys) does not fit i3d_r50" in msg
    assert "conv1: file has kt=1, i3d_r50 expects 5" in msg
    assert "layer1.0.conv1: file has kt=1, i3d_r50 expects 3" in msg
    assert "The file's temporal kernels are those of slow_r50" in msg
    # ResNet3d's default inflate (every block 3x1x1) is not the I3D basis of i3d_r50
    all3 = _save(tmp_path, mmengine_checkpoint(mmaction2_state(base=8, conv1_kernel=(5, 7, 7), inflate=(1, 1, 1, 1)),
                                               {**I3D, "inflate": (1, 1, 1, 1), "conv1_stride_t": 1,
                                                "pool1_stride_t": 1}), "all3.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(build_backbone("i3d_r50", temporal_pool=True, **thin), all3)
    assert "layer3.1.conv1: file has kt=3, i3d_r50 expects 1" in str(e.value)
    assert "layer2.0.conv1" not in str(e.value)  # 3 in both
    # inflate_style '3x3x3' puts the temporal kernel on conv2, which our bottlenecks keep 1x3x3
    s333 = _save(tmp_path, mmengine_checkpoint(mmaction2_state(base=8, inflate_style="3x3x3"),
                                               {**SLOWONLY, "inflate_style": "3x3x3"}), "s333.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(build_backbone("slow_r50", **thin), s333)
    msg = str(e.value)
    assert "layer3.0.conv2: file has kt=3, slow_r50 expects 1" in msg and "layer3.0.conv1: file has kt=1" in msg
    assert "inflate_style='3x3x3'" in msg
    # another mmaction2 backbone: recognised as mmaction2, refused by type
    fast = {k.replace("backbone.", "backbone.slow_path."): v
            for k, v in mmaction2_state(depth=(1, 1, 1, 1), base=8).items()}
    sf = _save(tmp_path, mmengine_checkpoint(fast, dict(type="ResNet3dSlowFast", pretrained=None)), "sf.pth")
    with pytest.raises(CheckpointMismatchError, match="backbone type 'ResNet3dSlowFast': only ResNet3d / "):
        load_pretrained(build_backbone("slow_tiny", num_classes=400), sf)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = mmaction2_state(depth=(1, 1, 1, 1), base=8)
    sd.pop("backbone.layer2.0.conv2.bn.weight")
    sd["backbone.layer3.0.non_local_block.g.conv.weight"] = torch.zeros(16, 128, 1, 1, 1)
    sd["data_preprocessor.mean"] = torch.zeros(3, 1, 1, 1)  # older 1.x files keep these: not weights
    path = _save(tmp_path, mmengine_checkpoint(sd, {**SLOWONLY, "non_local": (0, 0, 1, 0)}))
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(build_backbone("slow_tiny", num_classes=400), path)
    msg = str(e.value)
    assert "missing (1): stages.1.blocks.0.bn_b.weight" in msg
    assert "unexpected (1): backbone.layer3.0.non_local_block.g.conv.weight" in msg
    assert "non_local blocks: our backbones have none" in msg


class HistoryBuffer:
    """mmengine.logging.history_buffer.HistoryBuffer's pickled shape: arrays, and its statistics
    methods referenced by name (its __getstate__)."""

    def __init__(self):
        self.max_length = 1000000
        self._log_history = np.array([1.9, 1.7])
        self._count_history = np.array([1.0, 1.0])

    def mean(self):
        return self._log_history.mean()

    def __getstate__(self):
        return {**self.__dict__, "statistics_methods": {"mean": HistoryBuffer.mean}}


def test_training_state_objects_are_refused_unread(tmp_path, monkeypatch):
    """A checkpoint straight from training holds mmengine's message_hub (HistoryBuffer objects):
    weights_only cannot read it, so it is refused in one line naming what it holds."""
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(HistoryBuffer, "__module__", "mmengine.logging.history_buffer")
    sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer
    sd = mmaction2_state(depth=(1, 1, 1, 1), base=8)
    hub = {"log_scalars": OrderedDict([("train/loss", HistoryBuffer())]),
           "runtime_info": OrderedDict(epoch=256), "resumed_keys": OrderedDict([("train/loss", True)])}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
    path = _save(tmp_path, mmengine_checkpoint(sd, SLOWONLY, message_hub=hub, optimizer=optimizer))
    with pytest.raises(ValueError) as e:
        load_pretrained(build_backbone("slow_tiny", num_classes=400), path)
    msg = str(e.value)
    assert "\n" not in msg and "mmengine.logging.history_buffer.HistoryBuffer" in msg
    assert "publish_model.py" in msg and "weights_only=True" in msg


class _OpensAFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    sd = mmaction2_state(depth=(1, 1, 1, 1), base=8)
    ckpt = mmengine_checkpoint(sd, SLOWONLY)
    ckpt["meta"]["hook_msgs"]["callback"] = _OpensAFile(marker)
    for legacy in (False, True):
        path = tmp_path / f"evil_{legacy}.pth"
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ValueError, match=r"not tensors or plain data \((builtins|io)\.open\)"):
            load_pretrained(build_backbone("slow_tiny", num_classes=400), path)
    assert not marker.exists()


def _tiny_state(classes: int = 400):
    """slow_tiny in mmaction2's layout (1 block per stage, base 8: the same widths)."""
    return mmaction2_state(depth=(1, 1, 1, 1), base=8, classes=classes)


def test_trainer_init_from_an_mmaction2_file_resets_the_head(tmp_path):
    from ada3d_edge.models import Ada3DConfig, build_ada3d
    from ada3d_edge.train.build import load_init

    sd = _tiny_state()
    path = _save(tmp_path, mmengine_checkpoint(sd, SLOWONLY))
    model = build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=8, selection_width=0.35))
    head = model.backbone.head.proj.weight.clone()
    loaded = load_init(model, str(path))
    assert loaded["init_stage"] == "pretrained" and loaded["source"] == "mmaction2"
    assert loaded["reset_head"] == ["head.proj.weight", "head.proj.bias"]
    torch.testing.assert_close(model.backbone.head.proj.weight, head)
    torch.testing.assert_close(model.backbone.stages[3].blocks[0].conv_a.weight,
                               sd["backbone.layer4.0.conv1.conv.weight"])
    torch.testing.assert_close(model.backbone.stem.bn.running_var, sd["backbone.conv1.bn.running_var"])


def test_trainer_fine_tunes_from_the_zoo_i3d_without_its_temporal_strides(tmp_path):
    from ada3d_edge.models import Ada3DConfig, build_ada3d
    from ada3d_edge.train.build import load_init

    sd = mmaction2_state(depth=(1, 2, 2, 2), base=8, conv1_kernel=(5, 7, 7), inflate=((1,), (1, 0), (1, 0), (0, 1)))
    path = _save(tmp_path, mmengine_checkpoint(sd, I3D))
    model = build_ada3d(Ada3DConfig(arch="i3d_tiny", num_classes=8, selection_width=0.35,
                                    backbone_overrides={"temporal_pool": True}))
    loaded = load_init(model, str(path))
    assert "ignored the file's temporal strides (conv1_stride_t=2, pool1_stride_t=2)" in loaded["notes"][0]
    torch.testing.assert_close(model.backbone.stem.conv.weight, sd["backbone.conv1.conv.weight"])


@pytest.mark.slow
def test_ada3d_train_upper_from_an_mmaction2_file(tmp_path, tiny_synth_dataset):
    """`ada3d train upper RECIPE --set init_from.upper=FILE`, the command the README gives."""
    from train_helpers import tiny_recipe
    from ada3d_edge.cli import main
    from ada3d_edge.train.checkpoint import read_checkpoint

    path = _save(tmp_path, mmengine_checkpoint(_tiny_state(), SLOWONLY))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_synth_dataset, tmp_path / "run",
                                                 bn_calibration={"batches": 0})))
    res = CliRunner().invoke(main, ["train", "upper", str(recipe), "--set", f"init_from.upper={path}", "--quiet"])
    assert res.exit_code == 0, res.output
    init = read_checkpoint(tmp_path / "run" / "upper" / "final.pt")["train_state"]["init"]
    assert init["init"] == str(path) and init["source"] == "mmaction2"
    assert init["reset_head"] == ["head.proj.weight", "head.proj.bias"]


def test_parity_with_mmaction2_itself(tmp_path):
    """Where mmaction2 imports: its own ResNet3dSlowOnly / ResNet3d with random weights, saved as its
    Recognizer3D keys, must give our imported model the same features."""
    pytest.importorskip("mmaction.models.backbones.resnet3d", reason=(
        "mmaction2 does not import here: it needs mmcv and mmengine, and pip has no mmcv wheel for "
        "this torch on CPU"))
    from mmaction.models.backbones.resnet3d import ResNet3d
    from mmaction.models.backbones.resnet3d_slowonly import ResNet3dSlowOnly

    cases = [("slow_r50", False, ResNet3dSlowOnly(depth=50, pretrained=None, base_channels=8)),
             ("i3d_r50", True, ResNet3d(depth=50, pretrained=None, base_channels=8, conv1_kernel=(5, 7, 7),
                                        conv1_stride_t=1, pool1_stride_t=1, with_pool2=True,
                                        inflate=I3D["inflate"]))]
    for arch, pool, theirs in cases:
        theirs.init_weights()
        with torch.no_grad():
            for name, t in theirs.state_dict().items():
                if name.endswith(("running_var", "bn.weight")):
                    t.uniform_(0.5, 1.5)
                elif name.endswith(("running_mean", "bn.bias")):
                    t.normal_(0, 0.1)
        theirs.eval()
        state = {f"backbone.{k}": v for k, v in theirs.state_dict().items()}
        state["cls_head.fc_cls.weight"], state["cls_head.fc_cls.bias"] = torch.randn(5, 256), torch.randn(5)
        path = _save(tmp_path, {"meta": {"mmengine_version": "0.10.7"}, "state_dict": state}, f"{arch}.pth")
        ours = build_backbone(arch, num_classes=5, widths=(8, 16, 32, 64), stem_width=8, temporal_pool=pool).eval()
        load_pretrained(ours, path)
        with torch.no_grad():
            assert (ours.forward_features(_clip()) - theirs(_clip())).abs().max().item() <= 1e-5
