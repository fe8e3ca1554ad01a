"""TensorRT API conformance harness: the real binding wheels, their API surface, and a checking
double generated from it (see RULES.md and tests/test_trt_api_conformance.py)."""
