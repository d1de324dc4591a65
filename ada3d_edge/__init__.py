"""ada3d-edge: Ada3D training, export to ONNX/TensorRT bundles, and a torch-free stream runtime."""

__version__ = "0.1.0"
