"""nasplat: weight-sharing supernets, hardware-aware search and ONNX export."""

__version__ = "0.1.0"
