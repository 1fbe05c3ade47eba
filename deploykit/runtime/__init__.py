"""Runners (one interface over torch, ONNX Runtime and TensorRT), CUDA helpers, kernels.

Importing this package imports no backend: each runner module is loaded when asked for
by name (see :func:`deploykit.runtime.base.load_runner`).
"""
