"""The training loop every stage shares (see `stages.py` for what each stage optimises).

A run writes `<output_dir>/<stage>/`: `config.yaml` (the resolved recipe), `last.pt` (every epoch,
atomically, with optimizer, scheduler, epoch, step, RNG and baseline state), `final.pt`,
`metrics.csv` (one row per epoch) and `tb/` when TensorBoard is importable. `resume=True` continues
from `last.pt` at the start of the epoch after the last completed one. Under torchrun every
process trains its DistributedSampler shard; only rank 0 writes, validates and shows bars.
"""
from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..data.dataset import BadVideoTracker, collate_skip_bad
from .bn_calibration import calibrate_bn, is_calibrated, training_clips
from .build import (build_model, check_data_paths, data_info, init_path, load_init, lr_factor,
                    load_selection, make_dataset, make_optimizer, resolve_data_paths,
                    selection_init_path)
from .checkpoint import read_checkpoint, save_checkpoint
from .config import Recipe, save_recipe
from .dist import DistInfo, all_reduce_sum, barrier, init_distributed
from .inference import CostModel, quick_validate
from .rewards import Baseline, frame_prob_for
from .run_dir import check_stage_dir, clear_stage_outputs
from .stage_specs import StepInputs, get_stage, recipe_value
from .stages import prepare, set_train_modes

COLUMNS = ["epoch", "step", "lr", "time_s", "loss", "acc", "selection_acc", "loss_backbone",
           "loss_selection", "loss_policy", "loss_cls", "reward", "entropy", "frames", "stages3d", "frames_frac",
           "stages_frac", "val_metric", "val_selection_metric", "val_frames", "val_stages3d",
           "val_frames_frac", "val_stages_frac", "val_gflops", "bad_videos", "seen_videos"]
StepHook = Callable[[int, int, int], None]


# --- RNG state (weights_only-safe: tensors, ints, lists) -----------------------------------------

def get_rng_state() -> Dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def random_policy_probs(recipe: Recipe, num_frames: int) -> Dict[str, float]:
    """Random FT usage targets: random_policy.{frames,stages}, else the joint stage's greedy usage on
    the validation set (from `<output_dir>/joint/final.pt`)."""
    rp = recipe.random_policy
    frames, stages = rp.frames, rp.stages
    if frames is None or stages is None:
        joint = recipe.stage_dir("joint") / "final.pt"
        if not joint.is_file():
            raise ValueError("random-ft needs usage targets: pass --random-policy frames=F,stages=S "
                             f"(fractions of T and K) or set random_policy in the recipe; {joint} "
                             "(whose measured usage would be the default) does not exist")
        m = read_checkpoint(joint).get("metrics", {})
        frames = m["val_frames_frac"] if frames is None else frames
        stages = m["val_stages_frac"] if stages is None else stages
    mean_frames = min(max(frames * num_frames, 1.0), float(num_frames))
    return {"frames": float(frames), "stages": float(stages),
            "frame_prob": frame_prob_for(mean_frames, num_frames), "stage_prob": float(stages)}


class Trainer:
    def __init__(self, recipe: Recipe, stage: str, info: DistInfo, resume: bool, progress: bool,
                 on_step: Optional[StepHook], overwrite: bool = False):
        self.spec = get_stage(stage)  # everything stage-specific (stage_specs.py)
        self.recipe, self.stage, self.info = recipe, self.spec.name, info
        self.resume, self.progress, self.on_step = resume, progress and info.is_main, on_step
        self.overwrite = overwrite
        self.out = recipe.stage_dir(stage)

    def log(self, msg: str) -> None:
        if self.info.is_main:
            tqdm.write(f"[{self.stage}] {msg}")

    # --- setup -------------------------------------------------------------------------------------
    def setup(self) -> None:
        r, info = self.recipe, self.info
        self.train_ds = make_dataset(r, "train")
        self.val_ds = make_dataset(r, "test", list_file=r.data.val_list, num_clips=r.data.val_clips)
        self.classes, self.multi_label = self.train_ds.classes, self.train_ds.multi_label
        self.init = None if self.resume else init_path(r, self.stage)  # resuming: last.pt holds the weights
        self.selection_init = None if self.resume else selection_init_path(r, self.spec)
        self.random = random_policy_probs(r, r.data.num_frames) if self.spec.random_policy else None
        seed_everything(r.seed + info.rank)
        self.model = build_model(r, len(self.classes))
        self.loaded = {} if self.resume else load_init(self.model, self.init)
        if self.selection_init:  # policy transfer: another dataset's selection network
            self.loaded.update(load_selection(self.model, self.selection_init))
        self.resumed_from: Optional[Path] = None
        self.model.to(info.device)
        prepare(self.model, self.spec)
        self.baseline = Baseline(r.policy.baseline, r.policy.baseline_momentum)
        step = self.spec.step(self.spec, self.model, r, StepInputs(self.baseline, info, self.random))
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            step = DDP(step, device_ids=[info.device] if info.device.type == "cuda" else None)
        self.step_module = step
        self.epochs = int(recipe_value(r, self.spec.epochs))
        batch = int(recipe_value(r, self.spec.batch_size))
        per_proc = max(1, batch // info.world_size)
        self.sampler = (DistributedSampler(self.train_ds, info.world_size, info.rank, shuffle=True,
                                           seed=r.seed) if info.enabled else None)
        pin = info.device.type == "cuda"
        self.loader = DataLoader(self.train_ds, batch_size=per_proc, shuffle=self.sampler is None,
                                 sampler=self.sampler, num_workers=r.data.workers, pin_memory=pin,
                                 collate_fn=collate_skip_bad, drop_last=False)
        self.val_loader = DataLoader(self.val_ds, batch_size=max(1, per_proc // r.data.val_clips),
                                     num_workers=r.data.workers, collate_fn=collate_skip_bad)
        self.optimizer = make_optimizer(r, self.model, self.spec)
        steps = len(self.loader)
        total, warmup = self.epochs * steps, int(round(r.optim.warmup_epochs * steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warmup, r.optim.schedule))
        self.cost = CostModel(self.model.config, r.data.test_crop)
        self.tracker = BadVideoTracker(r.data.max_bad_fraction, dataset=self.train_ds,
                                       setting="data.max_bad_fraction (--max-bad-fraction)")
        self.start_epoch, self.global_step, self.metrics = 0, 0, {}
        if self.resume:
            self._load_last()
        self.writer = self._tensorboard()

    def _tensorboard(self):
        if not self.info.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: CSV only
            return None
        return SummaryWriter(str(self.out / "tb"))

    def _load_last(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist (no checkpoint of stage "
                                    f"{self.stage!r} in {self.recipe.output_dir}); run without --resume")
        ck = read_checkpoint(path)
        if ck.get("stage") != self.stage:
            raise ValueError(f"--resume: {path} is a {ck.get('stage')!r} checkpoint, not {self.stage!r}")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        st = ck.get("train_state", {})
        self.baseline.load_state_dict(st.get("baseline", {}))
        self.start_epoch, self.global_step = int(ck["epoch"]), int(ck["step"])
        self.metrics = dict(ck.get("metrics", {}))
        self.loaded = dict(st.get("init") or {"init": "unknown (not recorded in last.pt)"})
        self.resumed_from = path
        if ck.get("rng") and self.info.is_main:
            set_rng_state(ck["rng"])
        else:  # only rank 0 writes checkpoints: the others get a fresh seed per resumed epoch
            seed_everything(self.recipe.seed + self.info.rank + 7919 * self.start_epoch)
        if ck.get("recipe") and ck["recipe"] != self._recipe_dict():
            self.log("note: the recipe differs from the one last.pt was trained with; using the new one")
        self.log(f"resuming from {path}: {self.start_epoch} of {self.epochs} epochs done")

    def start_text(self) -> str:
        """Where the weights came from: the init checkpoint, or the last.pt a resumed run continues."""
        init = f"init: {self.loaded.get('init')}"
        if self.loaded.get("selection_init"):
            init += f", selection network: {self.loaded['selection_init']} (frozen)"
        if self.resumed_from is None:
            return init
        return f"resumed from {self.resumed_from} ({self.start_epoch} of {self.epochs} epochs done; first {init})"

    def _recipe_dict(self) -> Dict[str, Any]:
        d = self.recipe.to_dict()
        d.pop("source", None)
        return d

    # --- checkpoints and logs ---------------------------------------------------------------------
    def payload(self, epoch: int, final: bool) -> Dict[str, Any]:
        return {"model_config": self.model.config,
                "data": data_info(self.recipe, self.classes, self.multi_label), "stage": self.stage,
                "epoch": epoch, "step": self.global_step, "model": self.model.state_dict(),
                "optimizer": None if final else self.optimizer.state_dict(),
                "scheduler": None if final else self.scheduler.state_dict(),
                "metrics": dict(self.metrics), "rng": None if final else get_rng_state(),
                "recipe": self._recipe_dict(),
                "train_state": {"baseline": self.baseline.state_dict(), "epochs": self.epochs,
                                "world_size": self.info.world_size, "random_policy": self.random,
                                "init": {k: v for k, v in self.loaded.items() if k != "init_metrics"}}}

    def write_csv(self, row: Dict[str, Any]) -> None:
        path = self.out / "metrics.csv"
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, extrasaction="ignore", restval="")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(f"{self.stage}/{k}", v, row["epoch"])
            self.writer.flush()

    def _trim_csv(self) -> None:
        """On resume drop rows of epochs after the checkpoint (written before a crash)."""
        path = self.out / "metrics.csv"
        if not path.is_file():
            return
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= self.start_epoch]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, extrasaction="ignore", restval="")
            w.writeheader()
            w.writerows(rows)

    # --- loop -------------------------------------------------------------------------------------
    def run(self) -> Path:
        self.setup()
        r, info = self.recipe, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.overwrite:
                clear_stage_outputs(self.out)
            save_recipe(r, self.out / "config.yaml")
            if self.resume:
                self._trim_csv()
            self.log(f"{len(self.train_ds)} training videos, {len(self.classes)} classes, "
                     f"{self.epochs} epochs x {len(self.loader)} steps, world size {info.world_size}, "
                     f"{self.start_text()}, output: {self.out}")
        if self.spec.calibrate_bn_before and not is_calibrated(self.model.backbone):
            self.calibrate_bn(f"before {self.stage} (its backbone has no per-configuration statistics)")
        barrier(info)
        for epoch in range(self.start_epoch, self.epochs):
            row = self.train_epoch(epoch)
            last = epoch == self.epochs - 1
            if last and self.spec.calibrate_bn_after:
                self.calibrate_bn("after training")  # before the last validation and checkpoints
            if info.is_main and (last or (r.data.val_every and (epoch + 1) % r.data.val_every == 0)):
                val = quick_validate(self.model, self.val_loader, self.spec.val_mode, self.multi_label,
                                     info.device, r.threshold,
                                     (self.random["frame_prob"], self.random["stage_prob"]) if self.random else None,
                                     self.cost, self.progress)
                row.update(val)
                self.metrics.update(val)
            self.metrics.update({k: v for k, v in row.items() if k in ("loss", "acc", "reward")})
            if info.is_main:
                self.write_csv(row)
                save_checkpoint(self.out / "last.pt", self.payload(epoch + 1, final=False))
                self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in row.items() if v != ""))
            barrier(info)
        final = self.out / "final.pt"
        if info.is_main:
            save_checkpoint(final, self.payload(self.epochs, final=True))
            if self.writer is not None:
                self.writer.close()
            self.log(f"wrote {final}")
        barrier(info)
        return final

    def calibrate_bn(self, when: str) -> None:
        """Per-configuration BatchNorm statistics from `bn_calibration.batches` training batches
        (every process measures its own shard; rank 0's are saved)."""
        cfg = self.recipe.bn_calibration
        if cfg.batches <= 0:
            return
        t0 = time.time()
        seen = calibrate_bn(self.model.backbone, training_clips(self.loader, self.info.device, cfg.batches),
                            frame_keep_prob=cfg.frame_keep_prob, seed=self.recipe.seed, progress=self.progress)
        self.log(f"BN calibration {when}: {len(seen)} configurations x {max(seen.values())} batches "
                 f"in {time.time() - t0:.1f} s")

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        info = self.info
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        set_train_modes(self.model, self.spec)
        self.tracker.reset()
        sums: Dict[str, float] = {}
        count, t0 = 0, time.time()
        lr = float(self.optimizer.param_groups[-1]["lr"])  # at the start of the epoch
        bar = tqdm(self.loader, desc=f"{self.stage} {epoch + 1}/{self.epochs}", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        for i, batch in enumerate(bar):
            self.tracker.update(batch)
            self.tracker.check()
            empty = batch["clip"] is None
            if info.enabled and all_reduce_sum([float(empty)], info)[0] > 0:
                continue  # every process skips together, or DDP would wait forever
            if empty:
                continue
            clip = batch["clip"].to(info.device, non_blocking=True)
            policy = batch["policy"].to(info.device, non_blocking=True)
            labels = batch["label"].to(info.device, non_blocking=True)
            loss, stats = self.step_module(clip, policy, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.global_step += 1
            b = clip.shape[0]
            count += b
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * b
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            if self.progress:
                bar.set_postfix({k: f"{sums[k] / count:.3g}" for k in ("loss", "acc", "frames", "stages3d")
                                 if k in sums})
            if self.on_step is not None:
                self.on_step(epoch, i, self.global_step)
        keys = sorted(sums)
        totals = all_reduce_sum([sums[k] for k in keys] + [count, self.tracker.num_bad,
                                                           self.tracker.num_seen], info)
        n = max(totals[len(keys)], 1.0)
        row: Dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step,
                               "lr": lr,
                               "time_s": round(time.time() - t0, 2)}
        row.update({k: totals[j] / n for j, k in enumerate(keys)})
        row["bad_videos"], row["seen_videos"] = int(totals[-2]), int(totals[-1])
        if row["bad_videos"]:
            self.log(f"epoch {epoch + 1}: {row['bad_videos']} of {row['seen_videos']} videos unreadable, skipped")
        return row


def train_stage(recipe: Recipe, stage: str, *, resume: bool = False, overwrite: bool = False,
                progress: bool = True, on_step: Optional[StepHook] = None) -> Path:
    """Run one training stage ("upper", "policy", "joint", "random_ft"); returns final.pt's path.

    A stage folder that holds an earlier run is refused (`run_dir.OutputExistsError`) unless
    `resume` (continue from its last.pt) or `overwrite` (remove its checkpoints and metrics first).
    Every missing file (lists, classes, root, the checkpoint to start from) is reported before any
    training work. Under torchrun the process group is joined here (and left to the caller to end).
    """
    stage = get_stage(stage).name  # ValueError listing the stages for an unknown one
    check_stage_dir(recipe.stage_dir(stage), stage, resume, overwrite)
    resolve_data_paths(recipe)
    check_data_paths(recipe)
    info = init_distributed(recipe.device)
    return Trainer(recipe, stage, info, resume, progress, on_step, overwrite).run()


__all__ = ["train_stage", "Trainer", "random_policy_probs", "COLUMNS"]
