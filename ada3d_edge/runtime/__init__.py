"""The on-device runtime: backends (a table), adaptive predictor, stream sources/scheduler/sinks, bench.

Never imports torch, models, train or export, lazily or not (tests/test_runtime_imports.py walks the
source); the PyTorch reference backend and the PyTorch side of the bench live outside it
(``ada3d_edge.torch_backend``, ``ada3d_edge.bench_torch``).
"""
