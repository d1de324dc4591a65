"""Export: ONNX per stage configuration + policy + manifest (``exporter.export_bundle``), verification
in ONNX Runtime (``verify``), TensorRT engines on the target (``tensorrt``, ``profiles``, ``calibration``).

Modules are imported explicitly (``from ada3d_edge.export.exporter import export_bundle``): the ONNX
side needs torch, the TensorRT side must not.
"""
