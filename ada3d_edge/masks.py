"""Stage masks: which degradable stages of a configuration run 3D.

A mask is a bit string in stage order, ``"1"`` = 3D (``"10"``: res4 3D, res5 2D); it names the
bundle's files (``backbone_10.onnx``) and the manifest's entries. Masks are listed in one order
everywhere, numeric (``"00", "01", "10", "11"``), so ``all_masks(k)[i] == format(i, f"0{k}b")`` and
``int(mask, 2)`` is its index. Pure Python: the runtime, the bundle and the models all use it.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple


def all_masks(num_stages: int) -> List[str]:
    """Every stage mask for ``num_stages`` stages in numeric order, Upper (all ``1``) last."""
    return [format(i, f"0{num_stages}b") for i in range(2 ** int(num_stages))]


def upper_mask(num_stages: int) -> str:
    """The all-3D configuration ("Upper")."""
    return "1" * int(num_stages)


def mask_to_str(bits: Iterable) -> str:
    """K flags (bools, 0/1 ints, numpy or torch scalars) -> bit string in stage order, ``1`` = 3D."""
    return "".join("1" if int(b) else "0" for b in bits)


def str_to_mask(bits: str) -> Tuple[int, ...]:
    """Bit string -> K ints (0/1); ValueError for anything but a non-empty string of 0/1."""
    if not isinstance(bits, str) or not bits or set(bits) - {"0", "1"}:
        raise ValueError(f"stage mask {bits!r} must be a string of 0/1, one per degradable stage")
    return tuple(int(b) for b in bits)
