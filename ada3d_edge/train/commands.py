"""Click commands `ada3d train`, `ada3d eval` and `ada3d sweep` (registered in `ada3d_edge.cli`).

Only click is imported here; torch and the training code load when a command runs.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from typing import Optional, Sequence

import click

from ..extras import require
from .run_dir import check_stage_dir
from .stage_specs import PIPELINE, STAGE_REGISTRY, get_stage

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)  # TypeError is a bug, not a user error


@contextlib.contextmanager
def _click_errors():
    """Bad input -> one usage line (exit 2); a run that cannot go on (RuntimeError: too many unreadable
    videos and the like) -> one error line (exit 1). click's own Exit (a RuntimeError) passes through."""
    try:
        yield
    except USER_ERRORS as e:
        raise click.UsageError(str(e)) from None
    except click.exceptions.Exit:
        raise
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None


def _load(recipe: str, sets: Sequence[str], random_policy: Optional[str], init_from: Optional[str],
          output_dir: Optional[str], stage: Optional[str]):
    from .config import load_recipe, parse_random_policy

    extra = list(sets)
    if output_dir:
        extra.append(f"output_dir={output_dir}")
    r = load_recipe(recipe, extra)
    if random_policy:
        for k, v in parse_random_policy(random_policy).items():
            setattr(r.random_policy, k, v)
    if init_from:
        if stage is None or stage == "all":
            raise ValueError("--init-from needs a single stage (it sets init_from.<stage>)")
        setattr(r.init_from, stage, init_from)
    return r


def _end_distributed() -> None:
    if "ada3d_edge.train.dist" in sys.modules:  # not loaded: no process group was joined
        from .dist import end_distributed

        end_distributed()


@contextlib.contextmanager
def _distributed_teardown():
    """Leave the process group (if one was joined) however the command ends."""
    try:
        yield
    finally:
        _end_distributed()


def _interrupted(recipe, stage: str, later: Sequence[str], ctx: click.Context) -> str:
    """What Ctrl-C in a training stage left behind, and the exact commands that continue it."""
    from .checkpoint import read_checkpoint

    last = recipe.stage_dir(stage) / "last.pt"
    p = ctx.params
    common = [p["recipe"], *[w for kv in p["sets"] for w in ("--set", kv)]]
    for opt, key in (("--output-dir", "output_dir"), ("--random-policy", "random_policy"),
                     ("--init-from", "init_from"), ("--max-bad-fraction", "max_bad_fraction")):
        if p.get(key) is not None:
            common += [opt, str(p[key])]
    if p.get("quiet"):
        common.append("--quiet")

    def command(s: str, *extra: str) -> str:
        return " ".join(shlex.quote(w) for w in ["ada3d", "train", get_stage(s).cli_name, *common, *extra])

    again = ("--overwrite",) if p.get("overwrite") else ()
    rest = [command(s, *again) for s in later]
    if not last.is_file():
        return (f"Interrupted: {stage} finished no epoch, so there is nothing to resume; start it again with: "
                + " && ".join([command(stage), *rest]))
    ck = read_checkpoint(last)
    epochs = (ck.get("train_state") or {}).get("epochs", "?")
    return (f"Interrupted: {last} holds {stage} after epoch {ck['epoch']} of {epochs}; continue with: "
            + " && ".join([command(stage, "--resume"), *rest]))


@click.command("train")
@click.argument("stage", type=click.Choice([*(s.cli_name for s in STAGE_REGISTRY.values()), "all"]))
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (dotted, YAML-typed), e.g. --set policy.gamma=0.3. Repeatable.")
@click.option("--resume", is_flag=True, help="Continue from <output_dir>/<stage>/last.pt.")
@click.option("--overwrite", is_flag=True,
              help="Replace the checkpoints and metrics of an earlier run in <output_dir>/<stage>/.")
@click.option("--random-policy", default=None, metavar="frames=F,stages=S",
              help="Random FT usage targets (fractions of T and K); default: the recipe's, else the "
                   "joint stage's measured usage.")
@click.option("--init-from", default=None, type=click.Path(dir_okay=False),
              help="Checkpoint to start from (ada3d, pytorchvideo, PySlowFast or mmaction2); default: the previous "
                   "stage's final.pt.")
@click.option("--output-dir", default=None, help="Override output_dir.")
@click.option("--max-bad-fraction", type=click.FloatRange(0.0, 1.0), default=None,
              help="Override data.max_bad_fraction: the largest share of unreadable videos skipped per epoch.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_cmd(stage: str, recipe: str, sets, resume: bool, overwrite: bool, random_policy, init_from,
              output_dir, max_bad_fraction, quiet: bool) -> None:
    """Train a STAGE of Ada3D from a RECIPE (YAML in train/): upper (stage 0: backbone + MobileNetV2
    pretraining), policy (stage 1), joint (stage 2), random-ft (baseline), joint-from-upper (joint
    without stage 1, the paper's Table 5 "w/o Tr"), transfer (the backbone under another dataset's
    frozen selection network, init_from.selection: Table 3), or all (upper, policy, joint).
    Works under torchrun (DDP)."""
    require("torch", "train", "train")
    key = None if stage == "all" else get_stage(stage).name
    with _click_errors(), _distributed_teardown():
        extra = [f"data.max_bad_fraction={max_bad_fraction}"] if max_bad_fraction is not None else []
        r = _load(recipe, [*sets, *extra], random_policy, init_from, output_dir, key)
        stages = list(PIPELINE) if key is None else [key]
        for s in stages:  # every stage's folder before any work
            check_stage_dir(r.stage_dir(s), s, resume, overwrite)
        if any("policy_heads" in get_stage(s).trains for s in stages):  # the stages with a reward
            from .costs import check_recipe_cost

            check_recipe_cost(r)  # a latency table that does not fit: refused before any work
        from .trainer import train_stage

        for i, s in enumerate(stages):
            try:
                path = train_stage(r, s, resume=resume, overwrite=overwrite, progress=not quiet)
            except KeyboardInterrupt:
                click.echo(_interrupted(r, s, stages[i + 1:], click.get_current_context()), err=True)
                raise click.exceptions.Exit(130) from None
            click.echo(f"{s}: {path}")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_list", required=True, type=click.Path(dir_okay=False),
              help="List file of the test videos (e.g. val.txt).")
@click.option("--root", default=None, help="Folder the list's paths are relative to (default: the list's folder).")
@click.option("--classes", "classes_file", default=None,
              help="Classes file (default: classes.txt beside the list); classes.json beside it gives kinds.")
@click.option("--clips", type=click.IntRange(1), default=None, help="Clips per video (default: the recipe's).")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write everything as JSON.")
@click.option("--random-ft", default=None, type=click.Path(dir_okay=False),
              help="A random-ft checkpoint: adds the Random FT row.")
@click.option("--upper", default=None, type=click.Path(dir_okay=False),
              help="The stage-0 (upper) checkpoint: Upper and Random rows run it, as in the paper "
                   "(default: the evaluated checkpoint's backbone).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Greedy threshold (default: the checkpoint's).")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Videos per batch.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random policies.")
@click.option("--max-bad-fraction", type=click.FloatRange(0.0, 1.0), default=None,
              help="Largest share of unreadable videos skipped before eval stops (default: the checkpoint's "
                   "recipe's data.max_bad_fraction, the rule its training ran under).")
@click.option("--plot", "plot_out", default=None, type=click.Path(dir_okay=False),
              help="Draw the per-class usage (the paper's Fig. 4: mean # 3D stages and # frames per class, "
                   "static vs motion, sorted by usage) to this PNG (.svg and .pdf work too).")
@click.option("--table", type=click.Choice(["1", "3", "5", "6"]), default="1", show_default=True,
              help="The paper's table: 1 (this command's rows), 3 (policy transfer: CHECKPOINT from "
                   "`train transfer`, needs --upper), 5 (training stages: CHECKPOINT = full Ada3D, with "
                   "--wo-ft/--wo-tr), 6 (one learned head, random other; --random-ft adds Random FT). "
                   "Tables 5 and 6 default to 3 clips per video, as the paper.")
@click.option("--wo-ft", default=None, type=click.Path(dir_okay=False),
              help="--table 5: the stage-1 (policy) checkpoint, the 'w/o FT' row.")
@click.option("--wo-tr", default=None, type=click.Path(dir_okay=False),
              help="--table 5: a `train joint-from-upper` checkpoint, the 'w/o Tr' row.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(checkpoint: str, data_list: str, root, classes_file, clips, json_out, random_ft, upper, threshold,
             batch_size: int, workers: int, device: str, seed: int, max_bad_fraction, plot_out, table: str,
             wo_ft, wo_tr, quiet: bool) -> None:
    """Table 1 for CHECKPOINT: Upper, Random, Random FT, Ada3D — accuracy (or mAP), GFLOPs per clip,
    mean # 3D stages and # frames; per-class usage and static/motion means. --table 3|5|6: the
    paper's ablation tables instead."""
    require("torch", "train", "eval")
    if table != "1":
        if plot_out:
            raise click.UsageError(f"--plot draws Table 1's per-class usage; leave it out with --table {table}")
        _eval_paper_table(table, checkpoint, data_list, json_out, quiet, upper=upper, wo_ft=wo_ft, wo_tr=wo_tr,
                          random_ft=random_ft, root=root, classes_file=classes_file, num_clips=clips,
                          threshold=threshold, batch_size=batch_size, workers=workers, device=device, seed=seed,
                          max_bad_fraction=max_bad_fraction)
        return
    if wo_ft or wo_tr:
        raise click.UsageError("--wo-ft and --wo-tr are rows of Table 5: add --table 5")
    if plot_out:
        require("matplotlib", "train", "eval --plot")
        if not plot_out.lower().endswith((".png", ".svg", ".pdf")):
            raise click.UsageError(f"--plot {plot_out}: the file must end in .png, .svg or .pdf")
    with _click_errors():
        from .evaluate import evaluate, format_table, write_json

        res = evaluate(checkpoint, data_list, root=root, classes_file=classes_file, num_clips=clips,
                       random_ft=random_ft, upper=upper, threshold=threshold, batch_size=batch_size, workers=workers,
                       device=device, seed=seed, progress=not quiet, max_bad_fraction=max_bad_fraction)
    click.echo(format_table(res))
    if json_out:
        click.echo(f"wrote {write_json(res, json_out)}")
    if plot_out:
        from .fig4 import plot_fig4

        try:
            plot_fig4(res, plot_out)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        click.echo(f"wrote {plot_out} (per-class usage, the paper's Fig. 4)")


def _eval_paper_table(table: str, checkpoint: str, data_list: str, json_out, quiet: bool, **kw) -> None:
    with _click_errors():
        from .evaluate import write_json
        from .paper_tables import evaluate_table, format_paper_table

        res = evaluate_table(table, checkpoint, data_list, progress=not quiet, **kw)
    click.echo(format_paper_table(res))
    if json_out:
        click.echo(f"wrote {write_json(res, json_out)}")


def _gammas(text: str) -> list:
    """`--gamma 0.2,0.5,1.0` -> [0.2, 0.5, 1.0]; each a number >= 0."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--gamma {text!r}: {part!r} is not a number; pass values like 0.2,0.5,1.0") from None
        if not value >= 0:
            raise ValueError(f"--gamma {text!r}: gamma must be >= 0, got {part}")
        values.append(value)
    return values


@click.command("sweep")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--gamma", "gammas", default=None, metavar="A,B,C",
              help="Gamma values (default: the recipe's `gammas`).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe key. Repeatable.")
@click.option("--output-dir", default=None, help="Override output_dir.")
@click.option("--no-random-ft", is_flag=True, help="Skip the Random FT runs.")
@click.option("--resume", is_flag=True, help="Reuse finished stages of an earlier sweep; continue unfinished ones.")
@click.option("--overwrite", is_flag=True, help="Replace the checkpoints and metrics of an earlier sweep.")
@click.option("--clips", type=click.IntRange(1), default=None, help="Eval clips per video.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sweep_cmd(recipe: str, gammas, sets, output_dir, no_random_ft: bool, resume: bool, overwrite: bool, clips,
              quiet: bool) -> None:
    """Gamma sweep (paper Fig 3): train policy + joint (and Random FT at the resulting usage) per gamma, evaluate, and plot
    accuracy vs GFLOPs (PNG) with the points as CSV and JSON. Trains `upper` first when missing."""
    require("torch", "train", "sweep")
    require("matplotlib", "train", "sweep")
    with _click_errors(), _distributed_teardown():
        r = _load(recipe, sets, None, None, output_dir, None)
        values = _gammas(gammas) if gammas else list(r.gammas)
        if not values:
            raise ValueError("no gamma values: pass --gamma 0.2,0.5,1.0 or set `gammas` in the recipe")
        from .sweep import run_sweep

        out = run_sweep(r, values, random_ft=not no_random_ft, num_clips=clips, progress=not quiet,
                        resume=resume, overwrite=overwrite)
    click.echo(f"sweep: {out['png']}, {out['csv']}, {out['json']}")


COMMANDS = [train_cmd, eval_cmd, sweep_cmd]
