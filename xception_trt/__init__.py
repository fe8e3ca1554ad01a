"""xception-trt: deploy the Xception image classifier with NVIDIA TensorRT.

``import xception_trt`` works without TensorRT, CUDA or a GPU; heavy optional imports happen
inside :mod:`xception_trt.trt` or inside functions.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
