"""Deployment: ONNX export, graph passes, runners (PyTorch / ONNX Runtime / TensorRT), engine builds, Triton.

Heavy backends (onnxruntime, tensorrt) are imported lazily inside the functions that need them, so that
``import yolodeploy`` stays light.
"""
