"""How should the two heads share one joint latency cost c(v, T')? A bandit on a measured table.

The policy is input-independent (T frame logits, K stage logits), sampled with the training code's
`sample_actions` and trained by the training code's REINFORCE loss with batch-mean baselines, one
reward per head (`rewards.rewards`). A clip is "correct" with a probability that falls with fewer
frames and fewer 3D stages (`accuracy` below: a stand-in for the backbone, the same for every design),
so the designs trade accuracy against cost as training does. Each design is one way to split the
table's cost between the heads:

* ``usage``: the paper's O(u) = |u|/T, O(v) = (|v|/K)^2 (ignores the table);
* ``factored``: O(u) = c(Upper, |u|), O(v) = c(v, |u|) / c(Upper, |u|) (product = the joint cost);
* ``conditional``: O(u) = c(v, |u|) / c(v, T), O(v) = c(v, T) (the other factorisation);
* ``joint`` (what ``policy.cost: latency`` does): both heads get the whole cost, O(u) = O(v) = c(v, |u|).

Reported per design, over seeds: the greedy configuration it ends at, its table cost (latency as a
fraction of Upper's) and its accuracy under the stand-in. Pure CPU, seconds.

    OMP_NUM_THREADS=1 python benchmarks/reward_split_bandit.py --lut runs/lut/toy/lut.json \
        --out benchmarks/results/reward_split_bandit.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ada3d_edge.latency_lut import read_lut  # noqa: E402
from ada3d_edge.masks import upper_mask  # noqa: E402
from ada3d_edge.models.selection import greedy_actions, sample_actions  # noqa: E402
from ada3d_edge.train.costs import TableCost, usage_costs  # noqa: E402
from ada3d_edge.train.rewards import Baseline, reinforce_loss, rewards  # noqa: E402


def accuracy(frames: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
    """Stand-in P(correct): 0.95 with >= T/2 frames and every stage 3D, less with fewer of either."""
    t, k = frames.shape[1], max(stages.shape[1], 1)
    f = (frames.float().sum(1) / (t / 2)).clamp(max=1.0)
    s = stages.float().sum(1) / k
    return 0.35 + 0.6 * f * (0.75 + 0.25 * s)


def designs(table: TableCost, t: int):
    def factored(u, v):
        all3d = torch.ones(u.shape[0], table.k, dtype=torch.bool)
        upper = table.joint(u, all3d)
        return upper, table.joint(u, v) / upper

    def conditional(u, v):
        joint = table.joint(u, v)
        full = table.joint(torch.ones_like(u), v)
        return joint / full, full

    def joint(u, v):
        return table(u, v)

    return {"usage": usage_costs, "factored": factored, "conditional": conditional, "joint": joint}


def train(cost, t: int, k: int, gamma: float, steps: int, batch: int, lr: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    logits_u = torch.zeros(1, t, requires_grad=True)
    logits_v = torch.zeros(1, k, requires_grad=True)
    opt = torch.optim.SGD([logits_u, logits_v], lr=lr)
    base = Baseline("batch_mean")
    for _ in range(steps):
        m = torch.sigmoid(logits_u).expand(batch, t)
        n = torch.sigmoid(logits_v).expand(batch, k)
        acts = sample_actions(m, n)
        correct = torch.rand(batch, generator=g) < accuracy(acts.frames, acts.stages)
        r_u, r_v = rewards(correct, acts, gamma, cost)
        loss = reinforce_loss(acts, r_u, r_v, base("u", r_u), base("v", r_v))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return greedy_actions(torch.sigmoid(logits_u), torch.sigmoid(logits_v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lut", required=True, help="A latency table (ada3d bench BUNDLE --lut FILE).")
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=None, help="Write the Markdown table here.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lut = read_lut(args.lut)
    t, k = lut.num_frames, len(lut.stages)
    table = TableCost(lut.cost, t, k)
    rows = []
    def acc_of(key):
        return accuracy(torch.tensor([[1] * key[1] + [0] * (t - key[1])], dtype=torch.bool),
                        torch.tensor([[int(b) for b in key[0]]], dtype=torch.bool)).item()

    top = max(acc_of(key) for key in lut.cost)
    best = min((key for key in lut.cost if acc_of(key) >= top - 1e-9), key=lambda key: lut.cost[key])
    for name, cost in designs(table, t).items():
        ends, lat, acc = [], [], []
        for seed in range(args.seeds):
            a = train(cost, t, k, args.gamma, args.steps, args.batch, args.lr, seed)
            mask = "".join(str(int(b)) for b in a.stages[0].tolist())
            nf = int(a.frames[0].sum())
            ends.append(f"{mask}/{nf}")
            lat.append(lut.cost[(mask, nf)])
            acc.append(float(accuracy(a.frames, a.stages)[0]))
        rows.append((name, ends, sum(lat) / len(lat), max(lat), sum(acc) / len(acc)))
        print(f"{name:>11}: ends at {', '.join(ends)}; latency {rows[-1][2]:.3f} of Upper (worst {rows[-1][3]:.3f}); "
              f"accuracy {rows[-1][4]:.3f}", flush=True)
    up = upper_mask(k)
    lines = [
        "# Sharing one latency cost between the two heads: a bandit on a measured table",
        "",
        f"Written by `benchmarks/reward_split_bandit.py` (`OMP_NUM_THREADS=1 python benchmarks/reward_split_bandit.py "
        f"--lut {args.lut} --gamma {args.gamma} --steps {args.steps} --seeds {args.seeds}"
        f"{' --out ' + args.out if args.out else ''}`), 2-core CPU shared with other agents (no timing here: the table",
        f"was measured by `ada3d bench --lut` on {lut.machine.get('cpu', '?')}, {lut.backend}, arch {lut.arch}, T={t}).",
        "",
        "Input-independent policy, training code's sampling, rewards and REINFORCE loss (batch-mean baseline per head), "
        f"{args.steps} steps of {args.batch} samples, gamma {args.gamma}; P(correct) is the stand-in of the script "
        "(falls with fewer frames and fewer 3D stages). Latency = the table's cost of the greedy configuration the "
        f"design ends at (Upper {up}/{t} = 1.000). The cheapest configuration at the stand-in's top accuracy "
        f"({top:.3f}) is {best[0]}/{best[1]} ({lut.cost[best]:.3f} of Upper): the target.",
        "",
        "| design | O(u) | O(v) | ends at (mask/T', per seed) | mean latency / Upper | worst | mean accuracy |",
        "|---|---|---|---|---|---|---|"]
    formulas = {"usage": ("\\|u\\|/T", "(\\|v\\|/K)^2"), "factored": ("c(Upper,\\|u\\|)", "c(v,\\|u\\|)/c(Upper,\\|u\\|)"),
                "conditional": ("c(v,\\|u\\|)/c(v,T)", "c(v,T)"), "joint": ("c(v,\\|u\\|)", "c(v,\\|u\\|)")}
    for name, ends, mean_lat, worst, mean_acc in rows:
        fu, fv = formulas[name]
        lines.append(f"| {name} | {fu} | {fv} | {', '.join(ends)} | {mean_lat:.3f} | {worst:.3f} | {mean_acc:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
