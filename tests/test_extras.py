"""Without torch (the runtime install), the commands that need it say which extra to install, in one
line, before any work (issue 11 item 7)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_commands_name_the_extra_when_torch_is_missing(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    recipe = REPO / "train" / "demo.yaml"
    commands = {
        "train": (["train", "upper", str(recipe), "--output-dir", str(tmp_path / "runs")], "train"),
        "eval": (["eval", str(ckpt), "--data", str(tmp_path / "val.txt")], "train"),
        "sweep": (["sweep", str(recipe), "--output-dir", str(tmp_path / "runs")], "train"),
        "export": (["export", str(ckpt), "--out", str(tmp_path / "bundle")], "export"),
        "demo": (["demo", "--workdir", str(tmp_path / "demo")], "train,export"),
    }
    code = f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from click.testing import CliRunner
        from ada3d_edge.cli import main
        out = {{}}
        for name, (args, _) in {commands!r}.items():
            res = CliRunner().invoke(main, args)
            out[name] = [res.exit_code, res.output, repr(res.exception)]
        print(json.dumps(out))
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, extra) in commands.items():
        code, output, exc = results[name]
        assert code == 1, (name, output, exc)
        assert output.splitlines() == [f'Error: ada3d {name} needs PyTorch: pip install "ada3d-edge[{extra}]"'], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no work done

