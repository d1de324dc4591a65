"""The multi-camera config file `ada3d run --config FILE` reads (YAML; see runtime/README.md).

Keys are the `ada3d run` option names (``max_batch`` for ``--max-batch``); ``defaults`` holds the
per-source options every source starts from, and each entry of ``sources`` is a SRC or a mapping
with ``src`` and its own per-source options. Options given on the command line win over the file.
Unknown keys are refused by name, with the valid ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .app import RunOptions, StreamSource
from .sources import SourceOptions

# config key -> RunOptions field (the CLI's names, as in `ada3d run --help`)
RUN_KEYS = {"backend": "backend", "device": "device", "threshold": "threshold", "cap": "cap", "cap_lut": "cap_lut",
            "threads": "threads",
            "spin": "spinning", "ort_layout": "ort_layout", "hop": "hop", "max_batch": "max_batch", "queue": "queue_size",
            "jsonl": "jsonl", "overlay": "overlay", "show": "show", "topk": "topk",
            "max_windows": "max_windows", "duration": "duration"}
# config key -> SourceOptions field
SOURCE_KEYS = {"max_reconnects": "max_reconnects", "open_attempts": "open_attempts",
               "open_timeout": "open_timeout_s", "read_timeout": "read_timeout_s", "realtime": "realtime",
               "resize": "resize", "reconnect_backoff": "reconnect_backoff"}
TOP_KEYS = ("bundle", "sources", "defaults", *RUN_KEYS)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class RunConfig:
    """What a config file sets: only the keys it holds (the rest stay the CLI's)."""

    path: Path
    bundle: str | None = None
    run: dict[str, Any] = field(default_factory=dict)  # RunOptions fields
    defaults: dict[str, Any] = field(default_factory=dict)  # SourceOptions fields for every source
    sources: list[tuple[str | int, dict[str, Any]]] = field(default_factory=list)  # (SRC, own SourceOptions fields)


def _pairs(data: Mapping[str, Any], keys: Mapping[str, str], where: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(keys)}")
        if key == "resize" and value is not None:
            if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)):
                raise ConfigError(f"{where}: resize must be [width, height] in pixels, got {value!r}")
            value = tuple(value)
        if key == "reconnect_backoff":
            value = tuple(value)
        out[keys[key]] = value
    return out


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read and check a config file (ConfigError with the file and key on any problem)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of keys ({', '.join(TOP_KEYS)})")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {unknown}; valid keys: {', '.join(TOP_KEYS)}")
    run = _pairs({k: v for k, v in data.items() if k in RUN_KEYS}, RUN_KEYS, str(path))
    defaults = _pairs(data.get("defaults") or {}, SOURCE_KEYS, f"{path}: defaults")
    sources = []
    raw = data.get("sources") or []
    if not isinstance(raw, list):
        raise ConfigError(f"--config {path}: 'sources' must be a list of SRC or {{src: SRC, ...}} entries")
    for i, entry in enumerate(raw):
        if isinstance(entry, (str, int)):
            sources.append((entry, {}))
        elif isinstance(entry, dict) and "src" in entry:
            own = {k: v for k, v in entry.items() if k != "src"}
            sources.append((entry["src"], _pairs(own, SOURCE_KEYS, f"{path}: sources[{i}]")))
        else:
            raise ConfigError(f"--config {path}: sources[{i}] must be a SRC or a mapping with 'src', got {entry!r}")
    bundle = data.get("bundle")
    if bundle is not None:
        bundle = str((path.parent / str(bundle)) if not os.path.isabs(str(bundle)) else bundle)
    return RunConfig(path=path, bundle=bundle, run=run, defaults=defaults, sources=sources)


# `ada3d run` parameter -> SourceOptions field (the other run parameters are RunOptions fields)
CLI_SOURCE_PARAMS = {"max_reconnects": "max_reconnects", "open_timeout": "open_timeout_s",
                     "open_attempts": "open_attempts", "realtime": "realtime"}


def resolve_run(bundle: str | None, sources: Sequence[str], cli: Mapping[str, Any], given: set[str],
                config: RunConfig | None) -> tuple[str, list[StreamSource], RunOptions]:
    """Bundle, sources and options of one `ada3d run`: the CLI's defaults, then the config file's
    keys, then the options given on the command line (``given``: their parameter names)."""
    run_fields = {f.name for f in fields(RunOptions)} - {"source"}
    values = {k: v for k, v in cli.items() if k in run_fields}
    src_values = {CLI_SOURCE_PARAMS[k]: v for k, v in cli.items() if k in CLI_SOURCE_PARAMS}
    if config is not None:
        values.update(config.run)
        src_values.update(config.defaults)
        values.update({k: cli[k] for k in given if k in run_fields})
        src_values.update({CLI_SOURCE_PARAMS[k]: cli[k] for k in given if k in CLI_SOURCE_PARAMS})
    base = SourceOptions(**src_values)
    options = RunOptions(**values, source=base)
    if sources:  # sources on the command line replace the file's
        entries = [StreamSource(s) for s in sources]
    elif config is not None:
        entries = [StreamSource(src, replace(base, **own)) for src, own in config.sources]
    else:
        entries = []
    bundle = bundle or (config.bundle if config else None)
    where = f" (or 'bundle:' / 'sources:' in {config.path})" if config else " (or --config FILE)"
    if not bundle:
        raise ConfigError(f"no bundle given: pass BUNDLE{where}")
    if not entries:
        raise ConfigError(f"no source given: pass --source SRC{where}")
    if not os.path.isdir(bundle):
        raise ConfigError(f"bundle {bundle!r} is not a directory; pass a bundle written by `ada3d export`")
    return bundle, entries, options
