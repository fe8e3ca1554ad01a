"""xception-trt: deploy the Xception image classifier with NVIDIA TensorRT.

``import xception_trt`` works without TensorRT, CUDA or a GPU, and the runtime API (engines,
``Classifier``, ``open_runner``) without the build toolchain (torch, ONNX, ModelOpt); heavy
optional imports happen inside :mod:`xception_trt.trt` or inside functions, through
:func:`xception_trt.extras.needs`, which names the pip extra to install when one is missing.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
