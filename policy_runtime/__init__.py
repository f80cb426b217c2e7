"""A trained policy without Ray, torch or the training code: an ONNX graph and its metadata.

``load(bundle).act({"Ca": 8.5, ...}) -> {"dTc": -1.2}`` in physical units. Dependencies:
numpy and onnxruntime (and FastAPI with uvicorn for :mod:`policy_runtime.serve`).
"""

from policy_runtime.bundle import BundleError, Policy, load

__all__ = ["BundleError", "Policy", "load"]
