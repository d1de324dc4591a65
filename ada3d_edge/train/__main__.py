"""`python -m ada3d_edge.train STAGE RECIPE [...]` = `ada3d train ...` (for torchrun -m)."""
from .commands import train_cmd

if __name__ == "__main__":  # pragma: no cover
    train_cmd(prog_name="python -m ada3d_edge.train")
