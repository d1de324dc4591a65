"""The class sets of the synthetic dataset (`ada3d synth --class-set`), as data.

Set ``a`` is the demo's. Set ``b`` has other classes: other static appearances (colours, shapes and
textures that set ``a`` never draws), other motions (orbits, diagonal slides, spins while growing)
and a motion pool of its own, still half static and half motion, with motion classes in
time-reversed pairs. The two sets share no class name and no object colour or shape, so a model
trained on one has seen none of the other's classes: the setting of the paper's Table 3 (a selection
network trained on one dataset, kept frozen while the backbone learns another).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

Appearance = Tuple[str, str, str]       # (colour, shape, texture)
MotionPair = Tuple[str, str, str]       # (forward class, time-reversed class, motion type)


@dataclass(frozen=True)
class ClassSet:
    """One set of synthetic classes: static appearances (one class each, in this order), motion
    pairs, and the pool every motion class draws its object from (colours no static class uses)."""

    name: str
    description: str
    static_colours: Dict[str, Tuple[int, int, int]]
    motion_colours: Dict[str, Tuple[int, int, int]]
    static_appearances: Tuple[Appearance, ...]
    motion_shapes: Tuple[str, ...]       # no rotational symmetry: a rotation's sense is visible
    motion_textures: Tuple[str, ...]
    motion_pairs: Tuple[MotionPair, ...]

    @property
    def motion_pool(self) -> Tuple[Appearance, ...]:
        return tuple((c, s, t) for c in self.motion_colours for s in self.motion_shapes
                     for t in self.motion_textures)


SET_A = ClassSet(
    name="a", description="the demo's classes: coloured shapes that stay put; left/right, cw/ccw, "
                          "down/up, grow/shrink",
    static_colours={"red": (225, 40, 40), "green": (40, 200, 70), "blue": (50, 100, 235),
                    "yellow": (235, 210, 40)},
    # The motion classes' pool has colours of its own. A glance at one small frame then tells a
    # static class from a motion class (as a scene tells what kind of clip it is), which is the cue
    # Ada3D's selection network acts on; the direction of motion still shows only across frames.
    # With the colours shared, the selection network's MobileNetV2 at 32 px had to tell an arrow
    # from a triangle ten pixels wide and told static from motion clips apart only 64% of the time
    # on the demo.
    motion_colours={"magenta": (225, 60, 205), "cyan": (40, 215, 225), "orange": (245, 135, 25)},
    static_appearances=(
        ("red", "circle", "striped"), ("green", "square", "solid"), ("blue", "triangle", "dotted"),
        ("yellow", "cross", "striped"), ("red", "square", "dotted"), ("green", "triangle", "striped"),
        ("blue", "cross", "solid"), ("yellow", "circle", "dotted"),
    ),
    motion_shapes=("arrow", "ell", "pacman"),
    motion_textures=("solid", "striped", "dotted"),
    motion_pairs=(("move_right", "move_left", "translate_x"), ("rotate_cw", "rotate_ccw", "rotate"),
                  ("move_down", "move_up", "translate_y"), ("grow", "shrink", "scale")),
)

SET_B = ClassSet(
    name="b", description="other classes: other colours, shapes and textures that stay put; orbits, "
                          "diagonal slides, spins while growing",
    static_colours={"purple": (150, 60, 210), "white": (240, 240, 240), "brown": (135, 80, 35),
                    "lime": (170, 240, 50)},
    motion_colours={"pink": (250, 145, 185), "teal": (20, 135, 125), "navy": (25, 35, 125)},
    static_appearances=(
        ("purple", "diamond", "checkered"), ("white", "ring", "solid"), ("brown", "star", "vstriped"),
        ("lime", "hexagon", "checkered"), ("purple", "ring", "vstriped"), ("white", "star", "checkered"),
        ("brown", "hexagon", "solid"), ("lime", "diamond", "vstriped"),
    ),
    motion_shapes=("chevron", "flag", "tee"),
    motion_textures=("solid", "checkered", "vstriped"),
    motion_pairs=(("orbit_cw", "orbit_ccw", "orbit"), ("move_down_right", "move_up_left", "translate_diag"),
                  ("spin_grow", "spin_shrink", "spin_scale"),
                  ("move_down_left", "move_up_right", "translate_antidiag")),
)

CLASS_SETS: Dict[str, ClassSet] = {s.name: s for s in (SET_A, SET_B)}


def get_class_set(name: str) -> ClassSet:
    """The registered class set ``name``; ValueError listing the valid ones."""
    if name not in CLASS_SETS:
        raise ValueError(f"class set {name!r} unknown; valid: {', '.join(CLASS_SETS)} "
                         f"({'; '.join(f'{s.name}: {s.description}' for s in CLASS_SETS.values())})")
    return CLASS_SETS[name]
