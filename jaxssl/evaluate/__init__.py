"""Evaluators of frozen features and training-time collapse monitors.

``jaxssl.evaluate.knn`` is the kNN *function*; its module is importable as
``importlib.import_module("jaxssl.evaluate.knn")`` (for evaluators picked by name).
"""

from jaxssl.evaluate import collapse
from jaxssl.evaluate.knn import knn, knn_protocols

__all__ = ["collapse", "knn", "knn_protocols"]
