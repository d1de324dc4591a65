"""`ada3d eval --table 3|5|6`: the paper's ablation tables (Sec. 4.3) as rows of `ada3d eval`.

A table is data: a list of `TableRow`s, each naming the checkpoint it runs (a role: ``full`` = the
evaluated checkpoint, ``upper``, ``wo_ft``, ``wo_tr``, ``random_ft``) and where its frame and 3D-stage
actions come from: ``all`` (every frame / stage, Upper), ``learned`` (the row's own selection network,
greedy) or ``random`` (a random policy with the full model's mean usage: the Random / Random FT
machinery of `evaluate.py`, Bernoulli frames with at least one kept and Bernoulli stages). Rows with
a random part run in a second pass, after the first has measured the full model's usage; every row
reports its own GFLOPs per clip (selection network included where a policy runs), so budgets are
compared, not assumed.

* Table 5 (two training stages): Upper; neither stage (the untrained selection network's place is
  taken by a random policy at Ada3D's usage on Upper's backbone, the paper's row without Tr and FT);
  w/o FT (stage 1 only: the policy checkpoint as a model); w/o Tr (joint fine-tuning from Upper,
  `ada3d train joint-from-upper`); both (full Ada3D).
* Table 6 (one learned head): Upper; both random (Random FT when its checkpoint is given);
  the learned 3D policy with random frames; the learned frame policy with random 3D stages; both
  learned (full Ada3D). The one-head rows run the full model's backbone.
* Table 3 (policy transfer): Upper (this dataset's stage 0) and Ada3D (a `transfer` checkpoint: the
  other dataset's frozen selection network, this dataset's fine-tuned backbone).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..models.selection import Actions, greedy_actions
from .evaluate import PathLike, _row, open_eval, saving_text
from .inference import UsageAccumulator, all_actions, test_batches
from .rewards import frame_prob_for, random_actions

SOURCES = ("all", "learned", "random")
DEFAULT_CLIPS = {"5": 3, "6": 3}  # the paper's 3-clip testing of Tables 5 and 6


@dataclass(frozen=True)
class TableRow:
    """One row: its label, the checkpoint role it runs, where its frames and 3D stages come from,
    and the paper's check marks (column name -> bool)."""

    method: str
    model: str
    frames: str
    stages: str
    marks: Tuple[Tuple[str, bool], ...] = ()

    @property
    def random(self) -> bool:
        return "random" in (self.frames, self.stages)


@dataclass(frozen=True)
class TableSpec:
    """A paper table: title, caption, the check-mark columns and the rows (optional roles skipped when
    their checkpoint is not given; `required` roles are an error when missing)."""

    key: str
    title: str
    marks: Tuple[str, ...]
    rows: Tuple[TableRow, ...]
    required: Tuple[str, ...]


def _marks(**kw: bool) -> Tuple[Tuple[str, bool], ...]:
    return tuple(kw.items())


TABLES: Dict[str, TableSpec] = {t.key: t for t in (
    TableSpec("3", "Table 3: transferring learned policies (selection network trained on another dataset, "
                   "kept frozen; backbone fine-tuned on this one)", (),
              (TableRow("Upper", "upper", "all", "all"),
               TableRow("Ours (transferred policies)", "full", "learned", "learned")), ("upper",)),
    TableSpec("5", "Table 5: the two training stages (Tr: selection network trained with the backbone "
                   "frozen; FT: joint fine-tuning)", ("Tr", "FT"),
              (TableRow("Upper", "upper", "all", "all"),
               TableRow("neither (random policy at Ada3D's usage, Upper's backbone)", "upper", "random", "random",
                        _marks(Tr=False, FT=False)),
               TableRow("w/o FT (stage 1 only)", "wo_ft", "learned", "learned", _marks(Tr=True, FT=False)),
               TableRow("w/o Tr (joint from Upper)", "wo_tr", "learned", "learned", _marks(Tr=False, FT=True)),
               TableRow("Ada3D (both)", "full", "learned", "learned", _marks(Tr=True, FT=True))), ()),
    TableSpec("6", "Table 6: the 3D convolution and frame usage policies (a head not learned is replaced "
                   "by a random policy at the full model's usage)", ("3D", "Frame"),
              (TableRow("Upper", "upper", "all", "all"),
               TableRow("Random FT (both random)", "random_ft", "random", "random", _marks(**{"3D": False, "Frame": False})),
               TableRow("both random (Ada3D's backbone, no Random FT checkpoint)", "full_if_no_random_ft",
                        "random", "random", _marks(**{"3D": False, "Frame": False})),
               TableRow("3D policy + random frames", "full", "random", "learned", _marks(**{"3D": True, "Frame": False})),
               TableRow("frame policy + random 3D", "full", "learned", "random", _marks(**{"3D": False, "Frame": True})),
               TableRow("Ada3D (both)", "full", "learned", "learned", _marks(**{"3D": True, "Frame": True}))), ()),
)}
ROLE_OPTIONS = {"upper": "--upper", "wo_ft": "--wo-ft", "wo_tr": "--wo-tr", "random_ft": "--random-ft"}


def _actions(row: TableRow, learned: Optional[Actions], rnd: Optional[Actions], b: int, t: int, k: int,
             device) -> Actions:
    full = all_actions(b, t, k, device)
    pick = {"all": full, "learned": learned, "random": rnd}
    return Actions(pick[row.frames].frames, pick[row.stages].stages)


def _active_rows(spec: TableSpec, paths: Dict[str, Optional[PathLike]]) -> List[TableRow]:
    out = []
    for row in spec.rows:
        if row.model == "full_if_no_random_ft":
            if paths.get("random_ft") is None:
                out.append(row)
        elif row.model in ("full", "upper") or paths.get(row.model) is not None:
            out.append(row)
    return out


@torch.no_grad()
def evaluate_table(table: str, checkpoint: PathLike, data_list: PathLike, *, upper: Optional[PathLike] = None,
                   wo_ft: Optional[PathLike] = None, wo_tr: Optional[PathLike] = None,
                   random_ft: Optional[PathLike] = None, root: Optional[PathLike] = None,
                   classes_file: Optional[PathLike] = None, num_clips: Optional[int] = None,
                   threshold: Optional[float] = None, batch_size: int = 4, workers: int = 0,
                   device: str = "auto", seed: int = 0, progress: bool = True,
                   max_bad_fraction: Optional[float] = None) -> Dict[str, Any]:
    """Table `table` ("3", "5" or "6") for the full model `checkpoint` on a list file; returns the
    result dict that `format_paper_table` prints and `--json` writes. Clips per video default to
    the paper's (3 for Tables 5 and 6), else the checkpoint's recipe's."""
    if table not in TABLES:
        raise ValueError(f"--table {table}: valid tables are 1, {', '.join(TABLES)}")
    spec = TABLES[table]
    paths = {"upper": upper, "wo_ft": wo_ft, "wo_tr": wo_tr, "random_ft": random_ft}
    for role in spec.required:
        if paths[role] is None:
            raise ValueError(f"--table {table} needs {ROLE_OPTIONS[role]} CKPT (this dataset's stage-0 checkpoint)")
    roles_used = {r.model for r in spec.rows}
    for role, path in paths.items():
        if path is not None and role not in roles_used and role != "upper":
            raise ValueError(f"{ROLE_OPTIONS[role]} adds a row of another table; --table {table} does not use it")
    t0 = time.time()
    n_clips = num_clips or DEFAULT_CLIPS.get(table)
    es = open_eval(checkpoint, data_list, root, classes_file, n_clips, threshold, batch_size, workers, device,
                   max_bad_fraction, others=[(p, f"{ROLE_OPTIONS[r]} checkpoint", ROLE_OPTIONS[r])
                                             for r, p in paths.items()])
    models = {"full": es.model, "full_if_no_random_ft": es.model}
    for role, path in paths.items():
        if path is not None:
            models[role] = es.load_same_model(path, ROLE_OPTIONS[role])
    models.setdefault("upper", es.model)  # no --upper: the evaluated checkpoint's backbone, as Table 1
    rows = _active_rows(spec, paths)
    cost, dev, multi, thr = es.cost, es.device, es.multi, es.threshold
    t, k = cost.t, cost.k
    accs = {r.method: UsageAccumulator() for r in rows}
    labels: List[np.ndarray] = []

    def run(pass_rows: List[TableRow], desc: str, usage: Optional[Tuple[float, float]]) -> None:
        gen = torch.Generator().manual_seed(seed)
        for (clip, policy, lab, b, n), _ in tqdm(test_batches(es.loader, dev), total=len(es.loader),
                                                  desc=desc, disable=not progress):
            bn = clip.shape[0]
            rnd = random_actions(bn, t, k, *usage, generator=gen, device=dev) if usage else None
            learned: Dict[str, Actions] = {}
            for row in pass_rows:
                model = models[row.model]
                if "learned" in (row.frames, row.stages) and row.model not in learned:
                    learned[row.model] = greedy_actions(*model.selection(policy), thr)
                acts = _actions(row, learned.get(row.model), rnd, bn, t, k, dev)
                logits = model.backbone(clip) if row.frames == row.stages == "all" else model(clip, acts)
                accs[row.method].add(logits, acts, multi, b, n, cost)
            if usage is None:
                labels.append(lab.numpy())

    first = [r for r in rows if not r.random] or rows[:1]
    full_row = next(r for r in rows if r.model == "full" and r.frames == r.stages == "learned")
    run(first, f"table {table}: " + ", ".join(r.method.split(" (")[0] for r in first), None)
    es.check_bad_videos()
    if not labels:
        raise RuntimeError(f"no readable video in {es.data_list}; see the warnings above")
    labels_np = np.concatenate(labels)
    full_acc = accs[full_row.method]
    frame_prob = frame_prob_for(min(max(full_acc.mean_frames, 1.0), t), t)
    stage_prob = full_acc.mean_3d / k if k else 0.0
    second = [r for r in rows if r.random]
    if second:
        run(second, f"table {table}: random rows", (frame_prob, stage_prob))
    sel = cost.selection_gflops
    out_rows = []
    for r in rows:
        row = _row(accs[r.method], r.method, labels_np, multi, 0.0 if r.frames == r.stages == "all" else sel)
        row.update({"checkpoint": str(paths.get(r.model) or checkpoint), "frames": r.frames, "stages": r.stages,
                    "marks": dict(r.marks)})
        out_rows.append(row)
    up_row, full = out_rows[0], next(o for o, r in zip(out_rows, rows) if r is full_row)
    return {"table": table, "title": spec.title, "mark_columns": list(spec.marks),
            "checkpoint": str(checkpoint), **{f"{role}_checkpoint": str(p) if p else None for role, p in paths.items()},
            "num_videos": int(len(labels_np)), "num_classes": len(es.ck["data"]["classes"]), **es.header(),
            "rows": out_rows,
            "full_method": full_row.method,
            "random_policy": {"frame_prob": frame_prob, "stage_prob": stage_prob, "seed": seed,
                              "matched_to": full_row.method},
            "gflops_saving_vs_upper": 1.0 - full["gflops"] / up_row["gflops"],
            "transfer": _transfer_info(es.ck) if table == "3" else None,
            "wall_s": round(time.time() - t0, 2)}


def _transfer_info(ck: Dict[str, Any]) -> Dict[str, Any]:
    init = (ck.get("train_state") or {}).get("init") or {}
    return {"stage": ck.get("stage"), "selection_from": init.get("selection_init"),
            "selection_from_classes": init.get("selection_init_classes"), "backbone_from": init.get("init")}


def separation_note(res: Dict[str, Any], spread: float = 1.0, ceiling: float = 99.0) -> Optional[str]:
    """A plain sentence when the rows cannot tell the methods apart: every row under twice chance
    (top-1), every row (Upper included) at or above `ceiling`, or the rows after Upper all within
    `spread` points of each other (or of one video's worth of top-1, when that is more)."""
    metrics = [r["metric"] for r in res["rows"]]
    others = metrics[1:]
    unit = "mAP" if res["metric"] == "mAP" else "top-1"
    chance = 100.0 / res["num_classes"] if res.get("num_classes") and unit == "top-1" else None
    if chance is not None and max(metrics) < 2 * chance:
        return (f"Every method scores under twice chance ({max(metrics):.1f}% top-1 at best, chance "
                f"{chance:.1f}%): the models have not learned this data; these rows are not a result about "
                "the methods.")
    if all(m >= ceiling for m in metrics):
        return (f"Every method scores {min(metrics):.1f}-{max(metrics):.1f}% {unit}: this data cannot separate "
                "the methods; these rows are not a result about them.")
    one_video = 100.0 / res["num_videos"] if res.get("num_videos") and unit == "top-1" else 0.0
    if len(others) > 1 and max(others) - min(others) < max(spread, one_video + 1e-9):
        return (f"The rows after Upper lie within {max(others) - min(others):.1f} points ({min(others):.1f}-"
                f"{max(others):.1f}% {unit}"
                + (f"; one video is {one_video:.1f} points" if one_video >= spread else "")
                + "): this data cannot separate these methods.")
    return None


def format_paper_table(res: Dict[str, Any]) -> str:
    """The table in the paper's layout (check-mark columns, metric, GFLOPs, # 3D, # Frame), markdown."""
    metric = "mAP" if res["metric"] == "mAP" else "Acc"
    marks = res["mark_columns"]
    head = ["Method", *marks, f"{metric} (%)", "GFLOPs/clip", "# 3D", "# Frame"]
    lines = [res["title"], "",
             f"{res['arch']} (K={res['num_stages']}: {', '.join(res['stages'])}), T={res['num_frames']}, "
             f"crop {res['crop']}, {res['num_videos']} videos x {res['num_clips']} clips, "
             f"{res.get('num_videos_skipped', 0)} unreadable videos skipped, threshold {res['threshold']}; "
             f"Upper runs {res.get('upper_checkpoint') or 'the evaluated checkpoint'}.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["rows"]:
        ticks = [("✓" if r["marks"][m] else "✗") if m in r["marks"] else "" for m in marks]
        star = "*" if r["includes_selection"] else ""
        lines.append("| " + " | ".join([r["method"], *ticks, f"{r['metric']:.1f}", f"{r['gflops']:.4g}{star}",
                                        f"{r['mean_3d']:.2f}", f"{r['mean_frames']:.2f}"]) + " |")
    rp = res["random_policy"]
    lines.append(f"\n\\* includes the selection network ({res['selection_gflops_per_clip']:.4g} GFLOPs/clip). "
                 + (f"Random parts: frame p={rp['frame_prob']:.3f}, stage p={rp['stage_prob']:.3f} (matched to "
                    f"{rp['matched_to']}'s usage), seed {rp['seed']}. "
                    if any("random" in (r["frames"], r["stages"]) for r in res["rows"]) else "")
                 + saving_text(res["gflops_saving_vs_upper"]).replace("Ada3D", res["full_method"], 1))
    if res.get("transfer"):
        tr = res["transfer"]
        lines.append(f"Policies from {tr['selection_from']} ({tr['selection_from_classes']} classes, frozen); "
                     f"backbone fine-tuned from {tr['backbone_from']}.")
    note = separation_note(res)
    if note:
        lines.append(f"\n**{note}**")
    return "\n".join(lines)
