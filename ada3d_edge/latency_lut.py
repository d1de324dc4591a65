"""Latency look-up table: the measured cost of every (stage mask, T') on one machine, for the reward.

`ada3d bench BUNDLE --lut OUT.json` writes it (`lut_from_bench`); `policy.cost: latency` with
`policy.cost_lut: FILE` reads it (`read_lut`, then `check_lut` against the recipe). Entries are keyed
by configuration as the manifest names them, ``(mask string, T')``, never by file name, so the table
outlives the bundle's file layout. ``cost`` is the p50 latency at batch 1 divided by Upper's (all
stages 3D, all T frames) in the same bench run: Upper at T' = T is 1.0.

Pure Python (no torch, no runtime import): the runtime writes it, training reads it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .masks import all_masks, upper_mask

LUT_FORMAT = "ada3d-latency-lut"
LUT_VERSION = 1
Key = Tuple[str, int]  # (stage mask, T')


@dataclass(frozen=True)
class LatencyLut:
    """Normalised latency of every configuration of one bundle on one machine.

    Attributes:
        arch, num_frames, crop_size, stages: the bundle's identity (what the table is valid for).
        upper_gflops: the bundle's Upper backbone GFLOPs at T (tells another width or depth apart).
        selection_cost: the selection network's p50 latency / Upper's in the same run (None: not
            measured; tables written before it), what ``frame_cap`` adds to each clip's cost.
        cost: ``{(mask, T'): latency / Upper's latency at T}``; ``cost[(upper, T)] == 1.0``.
        latency_ms: the measured p50 (batch 1) behind each cost.
        machine, backend, threads: where and how it was measured.
        source: the bundle path and the command that wrote the file.
    """

    arch: str
    num_frames: int
    crop_size: int
    stages: Tuple[str, ...]
    cost: Dict[Key, float]
    latency_ms: Dict[Key, float] = field(default_factory=dict)
    machine: Dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    threads: Any = None
    source: Dict[str, Any] = field(default_factory=dict)
    upper_gflops: Optional[float] = None
    selection_cost: Optional[float] = None

    @property
    def upper_mask(self) -> str:
        return upper_mask(len(self.stages))

    def to_json(self) -> Dict[str, Any]:
        keys = sorted(self.cost, key=lambda k: (k[0], k[1]))
        return {"format": LUT_FORMAT, "version": LUT_VERSION, "arch": self.arch, "num_frames": self.num_frames,
                "crop_size": self.crop_size, "stages": list(self.stages), "upper_mask": self.upper_mask,
                "upper_gflops": self.upper_gflops, "selection_cost": self.selection_cost,
                "statistic": "p50 latency at batch 1 / Upper's (all stages 3D, T frames) in the same run",
                "machine": self.machine, "backend": self.backend, "threads": self.threads, "source": self.source,
                "entries": [{"mask": m, "frames": f, "cost": self.cost[(m, f)],
                             "latency_ms": self.latency_ms.get((m, f))} for m, f in keys]}


def lut_from_bench(result: Mapping[str, Any]) -> LatencyLut:
    """The table from a bench result's JSON (`BenchResult.to_json()`): batch-1 rows, p50 / Upper's p50.

    ValueError when a configuration is missing or failed (the table must cover every (mask, T')).
    """
    t, stages = int(result["num_frames"]), tuple(result["stages"])
    rows = {(c["mask"], int(c["frames"])): c for c in result["configs"] if int(c["batch"]) == 1}
    want = [(m, f) for m in all_masks(len(stages)) for f in range(1, t + 1)]
    bad = [f"{m}/T'={f}" + ("" if (m, f) not in rows else f" ({rows[(m, f)]['status']})") for m, f in want
           if (m, f) not in rows or rows[(m, f)]["status"] != "ok"]
    if bad:
        raise ValueError(f"--lut needs every configuration at every T' timed without error; missing or failed: "
                         f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''} (run without --masks/--frames)")
    p50 = {k: float(rows[k]["latency_ms"]["p50"]) for k in want}
    ref = p50[(upper_mask(len(stages)), t)]
    mc = dict(result.get("machine", {}))
    return LatencyLut(arch=str(result["arch"]), num_frames=t, crop_size=int(result["crop_size"]), stages=stages,
                      cost={k: v / ref for k, v in p50.items()}, latency_ms=p50, machine=mc,
                      backend=str(mc.get("backend_detail") or mc.get("backend", "")), threads=mc.get("threads"),
                      source={"bundle": result.get("bundle"), "command": result.get("command")},
                      upper_gflops=(result.get("upper") or {}).get("gflops"),
                      selection_cost=(result.get("policy") or {}).get("fraction_of_upper"))


def write_lut(lut: LatencyLut, path: Union[str, os.PathLike]) -> Path:
    """Write the table as JSON (parent folders created); atomically, via a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(lut.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def is_lut_file(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` holds a latency table (what `ada3d bench --lut` may replace)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("format") == LUT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_lut(path: Union[str, os.PathLike]) -> LatencyLut:
    """Read and check a table written by `write_lut`. ValueError / FileNotFoundError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latency table {path} not found; write one with `ada3d bench BUNDLE --lut {path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"latency table {path} is not JSON ({e}); write it with `ada3d bench BUNDLE --lut`") from None
    if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
        raise ValueError(f"{path} is not a latency table (no \"format\": \"{LUT_FORMAT}\"); "
                         "write one with `ada3d bench BUNDLE --lut`")
    if data.get("version") != LUT_VERSION:
        raise ValueError(f"latency table {path} has version {data.get('version')!r}; this ada3d reads {LUT_VERSION}")
    try:
        cost, lat = {}, {}
        for e in data["entries"]:
            key = (str(e["mask"]), int(e["frames"]))
            cost[key] = float(e["cost"])
            if e.get("latency_ms") is not None:
                lat[key] = float(e["latency_ms"])
        lut = LatencyLut(arch=str(data["arch"]), num_frames=int(data["num_frames"]),
                         crop_size=int(data["crop_size"]), stages=tuple(data["stages"]), cost=cost, latency_ms=lat,
                         machine=dict(data.get("machine") or {}), backend=str(data.get("backend", "")),
                         threads=data.get("threads"), source=dict(data.get("source") or {}),
                         upper_gflops=None if data.get("upper_gflops") is None else float(data["upper_gflops"]),
                         selection_cost=None if data.get("selection_cost") is None else float(data["selection_cost"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"latency table {path} is malformed ({type(e).__name__}: {e}); "
                         "write it again with `ada3d bench BUNDLE --lut`") from None
    bad = [f"{m}/T'={f}: {c}" for (m, f), c in cost.items() if not (math.isfinite(c) and c > 0)]
    if bad:
        raise ValueError(f"latency table {path}: costs must be positive numbers, got {', '.join(bad[:4])}")
    return lut


# What the table is checked against, in the words of its errors: a training recipe (policy.cost_lut)
# or the bundle it caps at run time (--cap-lut).
_AGAINST = {
    "recipe": {"model": "the recipe trains {arch} at T={t}",
               "crop": "the recipe evaluates at data.test_crop={crop}; bench a bundle exported from this recipe",
               "size": "the recipe builds one of {gflops:.4g} (other widths or depths); bench a bundle exported "
                       "from this recipe"},
    "bundle": {"model": "the bundle runs {arch} at T={t}",
               "crop": "the bundle runs at crop {crop}; write the table with `ada3d bench` of this bundle",
               "size": "the bundle's Upper is {gflops:.4g} (other widths or depths); write the table with "
                       "`ada3d bench` of this bundle"},
}


def check_lut(lut: LatencyLut, arch: str, num_frames: int, num_stages: int, crop_size: Optional[int] = None,
              upper_gflops: Optional[float] = None, where: str = "policy.cost_lut", against: str = "recipe") -> None:
    """Refuse a table measured for another model: arch, T (crop, Upper's GFLOPs) must match, every (mask, T')
    present. ``against``: "recipe" (training) or "bundle" (the runtime's frame cap), for the errors' words."""
    name = lut.source.get("path") or where
    say = _AGAINST[against]
    if lut.arch != arch or lut.num_frames != int(num_frames):
        raise ValueError(f"{where} {name}: the table is for arch {lut.arch} at T={lut.num_frames}, "
                         f"{say['model'].format(arch=arch, t=num_frames)}; measure this model's bundle with "
                         "`ada3d bench BUNDLE --lut FILE`")
    if crop_size is not None and lut.crop_size != int(crop_size):
        raise ValueError(f"{where} {name}: the table was measured at crop {lut.crop_size}, "
                         f"{say['crop'].format(crop=crop_size)}")
    if upper_gflops is not None and lut.upper_gflops is not None \
            and abs(lut.upper_gflops - upper_gflops) > 0.01 * upper_gflops:
        raise ValueError(f"{where} {name}: the table was measured on a {arch} of {lut.upper_gflops:.4g} GFLOPs (Upper), "
                         f"{say['size'].format(gflops=upper_gflops)}")
    want = [(m, f) for m in all_masks(num_stages) for f in range(1, int(num_frames) + 1)]
    missing = [f"{m}/T'={f}" for m, f in want if (m, f) not in lut.cost]
    if missing:
        raise ValueError(f"{where} {name}: the table lacks {len(missing)} of {len(want)} configurations "
                         f"({', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}); bench every mask at every T'")
    ref = lut.cost[(upper_mask(num_stages), int(num_frames))]
    if abs(ref - 1.0) > 1e-6:
        raise ValueError(f"{where} {name}: Upper at T={num_frames} costs {ref}, not 1.0 (the table is not normalised "
                         "to Upper); write it with `ada3d bench BUNDLE --lut`")


def load_checked_lut(path: Union[str, os.PathLike], arch: str, num_frames: int, num_stages: int,
                     crop_size: Optional[int] = None, upper_gflops: Optional[float] = None,
                     where: str = "policy.cost_lut", against: str = "recipe") -> LatencyLut:
    """`read_lut` then `check_lut`, the error naming the file."""
    lut = read_lut(path)
    lut.source["path"] = str(path)
    check_lut(lut, arch, num_frames, num_stages, crop_size, upper_gflops, where, against)
    return lut
