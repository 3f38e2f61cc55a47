"""Evaluators of frozen features (the training-time monitors are `jaxssl.monitors`).

``jaxssl.evaluate.knn`` is the kNN *function*; its module is importable as
``importlib.import_module("jaxssl.evaluate.knn")`` (for evaluators picked by name). Likewise
``jaxssl.evaluate.linear_probe`` is the linear-probe function.
"""

from jaxssl.evaluate import attention
from jaxssl.evaluate.knn import knn, knn_protocols
from jaxssl.evaluate.linear_probe import OnlineProbe, init_online_probe, linear_probe, online_probe

__all__ = ["attention", "knn", "knn_protocols", "linear_probe", "online_probe", "OnlineProbe", "init_online_probe"]
