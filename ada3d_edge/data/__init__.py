"""Video decoding, clip sampling, list-file datasets and the synthetic generator.

This package's top level imports nothing heavy: the video reader is torch-free and shared with the
runtime; the torch dataset lives in `ada3d_edge.data.dataset`.
"""
