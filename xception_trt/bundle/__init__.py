"""Bundles (``.xtrt``): one file carrying a model's ONNX variants, calibration scales,
ModelSpec, labels, preprocessing and prebuilt engines, and the rule that picks — or builds and
caches — the engine that fits the machine it is opened on, never a mismatched one.

- :mod:`.format`: the zip layout, the manifest and the verifying reader (:class:`Bundle`).
- :mod:`.facts`: what a machine offers (:class:`DeviceFacts`, :func:`probe_facts`).
- :mod:`.choice`: the pure decision (:func:`choose`) over (manifest, facts, request).
- :mod:`.cache`: the per-user engine cache and :func:`resolve`, which
  :func:`xception_trt.runners.open_runner` calls for a ``.xtrt`` file.
- :mod:`.doctor`: the machine/bundle compatibility report of ``xception-trt doctor``.
- :mod:`.tuned`: the configuration ``xception-trt tune`` chose for a bundle on this machine
  (:class:`~.tuned.TunedChoice`), recorded beside the engine cache and used when the same
  bundle is opened on the same machine.

Bundles are written by :func:`xception_trt.bundler.write_bundle` (``xception-trt bundle``),
which needs the toolchain; everything here runs with the core install (building an engine
from the bundled ONNX needs the ``onnx`` extra and a TensorRT, the CPU fallback the ``ort``
extra).
"""

from .format import BUNDLE_SUFFIXES, FORMAT_VERSION, Bundle, Manifest, is_bundle

__all__ = ["BUNDLE_SUFFIXES", "FORMAT_VERSION", "Bundle", "Manifest", "is_bundle"]
