"""Models: backbones with stage masks, the selection network, Ada3D, checkpoint import.

Architectures (`specs.py`) are pure Python; the torch modules are imported on first use so that
`ada3d_edge.flops` and the CLI stay light.
"""
from .specs import BackboneSpec, SelectionSpec, StageSpec, all_masks, get_spec, list_archs, mask_to_str, str_to_mask

_LAZY = {
    "Backbone": "backbone", "build_backbone": "backbone",
    "SelectionNet": "selection", "Actions": "selection", "sample_actions": "selection",
    "greedy_actions": "selection",
    "Ada3D": "ada3d", "Ada3DConfig": "ada3d", "build_ada3d": "ada3d", "pack_frames": "ada3d",
    "load_pretrained": "pretrained", "CheckpointMismatchError": "pretrained",
    "set_fold_frames": "layers",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BackboneSpec", "SelectionSpec", "StageSpec", "all_masks", "get_spec", "list_archs",
           "mask_to_str", "str_to_mask", *_LAZY]
