"""The PyTorch side of `ada3d bench --backend torch`: backbones and selection net rebuilt from a
checkpoint, run through the runtime's Backend interface (the bundle holds no PyTorch weights).

It lives outside ``ada3d_edge.runtime``, which never imports torch, models or train: the benchmark
takes this module's factory as its backend.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from .bundle import BACKBONE_NAME, POLICY_NAME
from .runtime.backends import make_backend
from .runtime.backends.base import Backend


def torch_modules(checkpoint: str, threads: int | None = None) -> dict[str, Any]:
    """``{policy, backbone}`` modules of a checkpoint (the backbone takes ``clip, stage_mask``, as the
    bundle's graph does), with 2D convs over folded frames."""
    import torch

    from .models import set_fold_frames
    from .models.fixed_mask import MaskInputBackbone
    from .train.checkpoint import load_model

    if threads:
        torch.set_num_threads(int(threads))
    model, _ = load_model(checkpoint)
    set_fold_frames(model.backbone, True)
    return {POLICY_NAME: model.selection, BACKBONE_NAME: MaskInputBackbone(model.backbone).eval()}


def torch_backend(checkpoint: str, device: str | None = None, threads: int | None = None) -> Backend:
    """A torch backend over the checkpoint's modules."""
    return make_backend("torch", device=device, modules=torch_modules(checkpoint, threads))


def torch_backend_factory(checkpoint: str, device: str | None = None,
                          threads: int | None = None) -> Callable[[], Backend]:
    """A picklable zero-argument factory (the bench's memory probes call it in fresh processes)."""
    return functools.partial(torch_backend, str(checkpoint), device, threads)
