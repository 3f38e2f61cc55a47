"""Evaluation of frozen features: kNN, linear probe, attention maps, and the evaluators of a run
(the training-time monitors are `jaxssl.monitors`).

Modules, each with one meaning (no function shadows its module):

* ``jaxssl.evaluate.features``: the one path from a network to frozen features (`make_fn`,
  `of_split`, `of_images`).
* ``jaxssl.evaluate.knn``: weighted kNN (`knn.knn`, `knn.knn_protocols`) and its `Evaluator`.
* ``jaxssl.evaluate.linear_probe``: the offline probe (`linear_probe.linear_probe`), its `Evaluator`,
  and the online probe trained inside the step (`linear_probe.online_probe`).
* ``jaxssl.evaluate.attentive_probe``: V-JEPA's attentive probe on frozen patch tokens and its `Evaluator`.
* ``jaxssl.evaluate.attention``: ViT attention maps.
* ``jaxssl.evaluate.common``: evaluators picked by name from `config.evals` (`from_config`).
"""

from jaxssl.evaluate import attention, attentive_probe, common, features, knn, linear_probe

__all__ = ["attention", "attentive_probe", "common", "features", "knn", "linear_probe"]
