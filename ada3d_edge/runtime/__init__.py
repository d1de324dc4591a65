"""The on-device runtime: backends, adaptive predictor, stream sources, scheduler and sinks.

Never imports torch (a test enforces it); the PyTorch backend imports it lazily.
"""
