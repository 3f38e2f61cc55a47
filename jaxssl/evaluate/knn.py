"""Weighted k-nearest-neighbour evaluation of frozen features.

The weighted kNN classifier of InstDisc (Wu et al., 2018, arXiv:1805.01978, Sec. 3.4)
as run by DINO (Caron et al., 2021, arXiv:2104.14294, ``eval_knn.py``): the k training
features most cosine-similar to a test feature vote for their labels, each with weight
exp(similarity / T). For a test feature :math:`x` and training features :math:`f_i`
with labels :math:`y_i`, all L2-normalised,

.. math::

    s_i = x^\\top f_i, \\qquad
    \\mathcal{N}_k(x) = \\operatorname{top-}k_i\\, s_i, \\qquad
    w_c(x) = \\sum_{i \\in \\mathcal{N}_k(x)} \\exp(s_i / T)\\, [y_i = c],

and the prediction is :math:`\\arg\\max_c w_c(x)`. Top-5 counts a hit when the
true class is among the 5 highest class scores. The usual protocols are
``(k=20, T=0.07)`` (InstDisc, DINO) and ``(k=200, T=0.1)`` (InstDisc).

Memory is bounded for ImageNet-size banks: the test set is processed in chunks of
``test_chunk`` rows by one jitted function with static shapes, and the bank in
chunks of ``train_chunk`` rows, merging a running top-k, so one chunk needs
O(test_chunk * (train_chunk + k)) memory. With a ``mesh`` the bank is sharded
along its rows over the ``"data"`` axis.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxssl import ops

# Bank rows added for padding carry this label. Their similarity is set to -inf
# before the top-k, so they can never be a neighbour (k <= number of real rows).
_PAD_LABEL = -1
_MAX_TOPK = 5
_DEFAULT_TRAIN_CHUNK = 8192

Protocol = tuple[int, float]


def _local_topk(
    queries: jax.Array, bank: jax.Array, bank_labels: jax.Array, *, k: int, train_chunk: int
) -> tuple[jax.Array, jax.Array]:
    """Top-k cosine similarities of ``queries`` over ``bank``, chunk by chunk.

    Args:
        queries: (Tq, D) L2-normalised test features.
        bank: (R, D) L2-normalised training features, R a multiple of ``train_chunk``.
        bank_labels: (R,) int32 labels, ``_PAD_LABEL`` for padding rows.
        k: number of neighbours kept.
        train_chunk: rows of ``bank`` compared at once.

    Returns:
        values (Tq, k) float32, sorted descending (-inf where fewer than k real
        rows were seen), and their labels (Tq, k) int32.
    """
    num_rows, dim = bank.shape
    bank = bank.reshape(num_rows // train_chunk, train_chunk, dim)
    bank_labels = bank_labels.reshape(num_rows // train_chunk, train_chunk)
    tq = queries.shape[0]

    def merge(carry, chunk):
        values, labels = carry
        feats, chunk_labels = chunk
        sims = jnp.dot(queries, feats.T, precision=jax.lax.Precision.HIGHEST)
        sims = jnp.where(chunk_labels[None, :] == _PAD_LABEL, -jnp.inf, sims)
        # The running top-k competes with the new chunk: memory O(Tq * (train_chunk + k)).
        all_values = jnp.concatenate([values, sims], axis=1)
        all_labels = jnp.concatenate(
            [labels, jnp.broadcast_to(chunk_labels[None, :], sims.shape)], axis=1
        )
        values, idx = jax.lax.top_k(all_values, k)
        return (values, jnp.take_along_axis(all_labels, idx, axis=1)), None

    empty = (
        jnp.full((tq, k), -jnp.inf, jnp.float32),
        jnp.full((tq, k), _PAD_LABEL, jnp.int32),
    )
    # The first chunk runs outside the scan: its output, unlike `empty`, is
    # device-varying under shard_map, as the scan carry must be.
    carry, _ = merge(empty, (bank[0], bank_labels[0]))
    if bank.shape[0] > 1:
        carry, _ = jax.lax.scan(merge, carry, (bank[1:], bank_labels[1:]))
    return carry


def _vote(
    values: jax.Array,
    labels: jax.Array,
    test_labels: jax.Array,
    *,
    protocols: tuple[Protocol, ...],
    num_classes: int,
) -> jax.Array:
    """Weighted votes and top-1 / top-m hits for every protocol.

    ``values``/``labels`` (Tq, k_max) are sorted descending, so the k nearest
    neighbours of every protocol are the first k columns. The weight
    ``exp((s_i - s_max) / T)`` equals ``exp(s_i / T)`` up to a per-row factor, which
    changes no ranking but keeps small temperatures from overflowing or
    underflowing every weight to zero.

    A class that no neighbour voted for (score 0) never counts as a top-m hit:
    DINO's ``sort`` would order such ties arbitrarily.

    Returns:
        bool (num_protocols, 2, Tq): [top-1 hit, top-min(5, C) hit].
    """
    m = min(_MAX_TOPK, num_classes)
    rows = jnp.arange(values.shape[0])[:, None]
    y = jnp.clip(test_labels, 0, num_classes - 1)
    out = []
    for k, temperature in protocols:
        v, lab = values[:, :k], labels[:, :k]
        weights = jnp.exp((v - v[:, :1]) / temperature)
        # Padding labels (never selected, see _PAD_LABEL) would go out of bounds: dropped.
        lab = jnp.where(lab == _PAD_LABEL, num_classes, lab)
        scores = jnp.zeros((values.shape[0], num_classes), jnp.float32)
        scores = scores.at[rows, lab].add(weights, mode="drop")
        _, top = jax.lax.top_k(scores, m)  # ties -> lower class index, as argmax
        true_score = jnp.take_along_axis(scores, y[:, None], axis=1)[:, 0]
        hit1 = top[:, 0] == y
        hitm = jnp.any(top == y[:, None], axis=1) & (true_score > 0)
        out.append(jnp.stack([hit1, hitm]))
    return jnp.stack(out)


_normalize_jit = jax.jit(ops.l2_normalize)


# Cached: evaluating every few thousand steps reuses one compiled function.
@functools.lru_cache(maxsize=32)
def _make_chunk_fn(*, k: int, train_chunk: int, protocols, num_classes: int, mesh: Mesh | None):
    """Jitted (test_chunk, bank, bank_labels, test_labels) -> hits (P, 2, Tq)."""
    vote = functools.partial(_vote, protocols=protocols, num_classes=num_classes)
    topk = functools.partial(_local_topk, k=k, train_chunk=train_chunk)

    if mesh is None:

        def chunk_fn(queries, bank, bank_labels, test_labels):
            values, labels = topk(ops.l2_normalize(queries), bank, bank_labels)
            return vote(values, labels, test_labels)

        return jax.jit(chunk_fn)

    # Why shard_map and not jit on global arrays: with the bank sharded by rows, the
    # (Tq, N) similarity matrix is sharded by columns and a plain `lax.top_k` over that
    # sharded axis may be partitioned by all-gathering the full row of similarities,
    # i.e. O(Tq * N) memory per device, the very thing chunking avoids. Here each device
    # keeps its own running top-k over its rows, then one all_gather of (Tq, k) values
    # and labels per device and a top-k over the n_dev * k candidates give the global
    # top-k. Both paths return neighbours sorted by similarity, so the weighted vote
    # sums in the same order and the result equals the single-device one.
    def local_fn(queries, bank, bank_labels, test_labels):
        values, labels = topk(ops.l2_normalize(queries), bank, bank_labels)
        values = jax.lax.all_gather(values, "data", axis=1, tiled=True, to="invarying")
        labels = jax.lax.all_gather(labels, "data", axis=1, tiled=True, to="invarying")
        values, idx = jax.lax.top_k(values, k)
        labels = jnp.take_along_axis(labels, idx, axis=1)
        return vote(values, labels, test_labels)

    sharded = jax.shard_map(
        local_fn,
        mesh=mesh,
        in_specs=(P(), P("data", None), P("data"), P()),
        out_specs=P(),
    )
    return jax.jit(sharded)


@jax.jit
def _nonfinite_rows(features):
    """How many rows of `features` hold a NaN or an Inf (on device: works on a global, sharded array)."""
    return jnp.sum(~jnp.all(jnp.isfinite(features), axis=1))


def _validate(train_features, train_labels, test_features, test_labels, protocols, num_classes,
              test_chunk, train_chunk, mesh):
    """Checks shapes and arguments; returns int32 NumPy labels, (int, float) protocols, C."""
    for name, f in (("train_features", train_features), ("test_features", test_features)):
        if np.ndim(f) != 2:
            raise ValueError(f"{name} must be 2D (num_examples, dim), got shape {np.shape(f)}.")
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    pairs = (("train", train_labels, train_features), ("test", test_labels, test_features))
    for name, lab, f in pairs:
        if lab.ndim != 1 or lab.shape[0] != f.shape[0]:
            raise ValueError(
                f"{name}_labels must have shape ({f.shape[0]},) to match {name}_features "
                f"{tuple(f.shape)}, got {lab.shape}."
            )
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{name}_labels must be integers, got dtype {lab.dtype}.")
        if lab.size and lab.min() < 0:
            raise ValueError(f"{name}_labels must be >= 0, got {lab.min()}.")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"Feature dims differ: train_features {tuple(train_features.shape)} vs "
            f"test_features {tuple(test_features.shape)}."
        )
    n_train = train_features.shape[0]
    if n_train == 0 or test_features.shape[0] == 0:
        raise ValueError("kNN needs at least one train and one test example.")
    for name, f in (("train_features", train_features), ("test_features", test_features)):
        bad = int(_nonfinite_rows(f))
        if bad:  # a NaN row would be nobody's neighbour and the accuracy would still look plausible
            raise ValueError(f"{name} has {bad} of {f.shape[0]} row(s) holding NaN or Inf: the network produced "
                             f"non-finite features, so a kNN accuracy from them would be meaningless.")
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError("protocols must list at least one (k, temperature) pair.")
    for k, temperature in protocols:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k}.")
        if k > n_train:
            raise ValueError(
                f"k={k} exceeds the {n_train} train examples: pass k <= {n_train} "
                f"or a larger train set."
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature} (k={k}).")
    if test_chunk < 1:
        raise ValueError(f"test_chunk must be >= 1, got {test_chunk}.")
    if train_chunk is not None and train_chunk < 1:
        raise ValueError(f"train_chunk must be >= 1 or None, got {train_chunk}.")
    if mesh is not None and "data" not in mesh.axis_names:
        raise ValueError(f"mesh must have a 'data' axis, got axis names {mesh.axis_names}.")
    max_label = int(max(train_labels.max(), test_labels.max()))
    if num_classes is None:
        num_classes = max_label + 1
    elif max_label >= num_classes:
        raise ValueError(
            f"Labels go up to {max_label} but num_classes={num_classes}: pass "
            f"num_classes=None to infer it."
        )
    protocols = tuple((int(k), float(t)) for k, t in protocols)
    return train_labels.astype(np.int32), test_labels.astype(np.int32), protocols, num_classes


def _pad_rows(x: Any, rows: int, value) -> Any:
    """Pads axis 0 of a NumPy or JAX array to ``rows`` with ``value``."""
    pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    lib = np if isinstance(x, np.ndarray) else jnp
    return lib.pad(x, pad, constant_values=value)


def knn_hits(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    protocols: Sequence[Protocol] = ((20, 0.07),),
    num_classes: int | None = None,
    test_chunk: int = 1024,
    train_chunk: int | None = None,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """Per-example kNN hits for every protocol; ``knn`` and ``knn_protocols`` sum these.

    One pass over the bank finds the ``max(k)`` nearest neighbours, which serve every
    protocol (the k nearest are the first k of the ``max(k)`` nearest).

    Returns:
        bool NumPy array (num_protocols, 2, N_test): [top-1 hit, top-min(5, C) hit].
    """
    if not isinstance(train_features, (np.ndarray, jax.Array)):
        train_features = np.asarray(train_features)
    if not isinstance(test_features, (np.ndarray, jax.Array)):
        test_features = np.asarray(test_features)
    train_labels, test_labels, protocols, num_classes = _validate(
        train_features, train_labels, test_features, test_labels, protocols, num_classes,
        test_chunk, train_chunk, mesh,
    )
    k_max = max(k for k, _ in protocols)
    n_train, n_test = train_features.shape[0], test_features.shape[0]

    # Bank layout: n_dev blocks of rows_per_dev rows, each a whole number of train chunks.
    n_dev = 1 if mesh is None else mesh.shape["data"]
    rows_per_dev = -(-n_train // n_dev)
    # Default chunk: a (test_chunk, 8192) similarity block. Merging the whole bank at once
    # is far slower on CPU (a 10k x 50k CIFAR-10 kNN went from ~10 s to ~10 min).
    train_chunk = min(_DEFAULT_TRAIN_CHUNK if train_chunk is None else train_chunk, rows_per_dev)
    rows_per_dev = -(-rows_per_dev // train_chunk) * train_chunk
    bank = _pad_rows(train_features, n_dev * rows_per_dev, 0)
    bank_labels = _pad_rows(train_labels, n_dev * rows_per_dev, _PAD_LABEL)
    if mesh is None:
        put_bank = put_replicated = jax.device_put
    else:
        # The bank is sharded by rows; test chunks are replicated on the same devices.
        put_bank = functools.partial(jax.device_put, device=NamedSharding(mesh, P("data")))
        put_replicated = functools.partial(jax.device_put, device=NamedSharding(mesh, P()))
    bank = _normalize_jit(put_bank(bank))  # row-wise: keeps the row sharding
    bank_labels = put_bank(bank_labels)

    chunk_fn = _make_chunk_fn(
        k=k_max, train_chunk=train_chunk, protocols=protocols, num_classes=num_classes, mesh=mesh
    )
    # One static chunk shape -> one compilation; the last chunk is padded and its
    # padding rows dropped on the host.
    tq = min(test_chunk, n_test)
    hits = []
    for start in range(0, n_test, tq):
        stop = min(start + tq, n_test)
        queries = put_replicated(_pad_rows(test_features[start:stop], tq, 0))
        labels = put_replicated(_pad_rows(test_labels[start:stop], tq, _PAD_LABEL))
        hits.append(np.asarray(chunk_fn(queries, bank, bank_labels, labels))[..., : stop - start])
    return np.concatenate(hits, axis=-1)


def knn_protocols(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    protocols: Sequence[Protocol] = ((20, 0.07), (200, 0.1)),
    num_classes: int | None = None,
    test_chunk: int = 1024,
    train_chunk: int | None = None,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Weighted kNN accuracies for several (k, T) protocols from one pass over the bank.

    Args: as ``knn``, with ``protocols`` a sequence of ``(k, temperature)`` pairs.

    Returns:
        ``{"knn_k20_t0.07_top1": ..., "knn_k20_t0.07_top5": ..., "knn_k200_t0.1_top1": ...}``,
        fractions in [0, 1].

    """
    hits = knn_hits(
        train_features, train_labels, test_features, test_labels, protocols=protocols,
        num_classes=num_classes, test_chunk=test_chunk, train_chunk=train_chunk, mesh=mesh,
    )
    acc = hits.mean(axis=-1, dtype=np.float64)
    out = {}
    for (k, temperature), (top1, top5) in zip(protocols, acc):
        out[f"knn_k{int(k)}_t{float(temperature):g}_top1"] = float(top1)
        out[f"knn_k{int(k)}_t{float(temperature):g}_top5"] = float(top5)
    return out


def knn(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    test_chunk: int = 1024,
    train_chunk: int | None = None,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Weighted kNN top-1 / top-5 accuracy of frozen features (InstDisc, DINO protocol).

    .. math::

        \\hat y(x) = \\arg\\max_c
            \\sum_{i \\in \\mathcal{N}_k(x)} \\exp(\\cos(x, f_i) / T)\\,[y_i = c]

    Args:
        train_features: (N_train, D) float features of the bank (NumPy or JAX).
        train_labels: (N_train,) int labels in [0, num_classes).
        test_features: (N_test, D) float features to classify.
        test_labels: (N_test,) int labels.
        k: number of neighbours, 1 <= k <= N_train.
        temperature: T > 0 of the vote weights exp(cos / T).
        num_classes: C; inferred as max label + 1 when None.
        test_chunk: test rows per jitted call (the last chunk is padded and masked).
        train_chunk: bank rows compared at once, merging a running top-k; None means
            8192 (or a device's whole bank if smaller). Memory is O(test_chunk * (train_chunk + k)).
        mesh: optional ``Mesh`` with a ``"data"`` axis; the bank is sharded by rows over
            it (padded to a multiple of the device count with rows that are never
            neighbours). The result equals the unsharded one.

    Returns:
        ``{"top1": float, "top5": float}`` in [0, 1]. ``top5`` counts the true class among
        the min(5, C) highest class scores, so it is trivially 1.0 when C <= 5; a class
        that received no vote is never a hit.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3, dtype=np.float32).repeat(4, axis=0)
        >>> y = np.arange(3).repeat(4)
        >>> knn(x, y, x, y, k=3)["top1"]
        1.0

    References:
        Wu et al., 2018, https://arxiv.org/abs/1805.01978;
        Caron et al., 2021, https://arxiv.org/abs/2104.14294.
    """
    out = knn_protocols(
        train_features, train_labels, test_features, test_labels,
        protocols=((k, temperature),), num_classes=num_classes, test_chunk=test_chunk,
        train_chunk=train_chunk, mesh=mesh,
    )
    top1, top5 = out.values()
    return {"top1": top1, "top5": top5}


class Evaluator:
    """Weighted kNN of frozen backbone features, train split as the bank, test split as queries.

    Reports `knn_k{k}_t{T}_top1/top5` for every protocol and, for every method alike, the collapse
    monitors of the test features: RankMe (Garrido et al., 2023) and the std of the L2-normalised
    features (SimSiam Sec. 4.1). Options (a `config.evals.knn` block) are the keyword arguments
    below; `num_classes` None infers it from the labels.
    """

    def __init__(self, net, mesh: Mesh, *, config, data_dir: str, train_split: str = "train",
                 test_split: str = "test", train_examples: int = -1, test_examples: int = -1, batch_size: int = 500,
                 protocols: Sequence[Protocol] = ((20, 0.07), (200, 0.1)), view: dict | None = None,
                 num_classes: int | None = None):
        from jaxssl.evaluate import common  # pylint: disable=g-import-not-at-top
        self.features = common.SplitFeatures(net, mesh, config, data_dir, train_split=train_split,
                                             test_split=test_split, train_examples=train_examples,
                                             test_examples=test_examples, batch_size=batch_size, view=view)
        self.protocols = tuple((int(k), float(t)) for k, t in protocols)
        self.num_classes = num_classes

    def check(self) -> None:
        self.features.check()

    def evaluate_features(self, train_features, train_labels, test_features, test_labels) -> dict[str, float]:
        from jaxssl import monitors  # pylint: disable=g-import-not-at-top
        out = knn_protocols(train_features, train_labels, test_features, test_labels, protocols=self.protocols,
                            num_classes=self.num_classes)
        out.update(monitors.monitors(test_features))
        return out

    def run(self, variables) -> dict[str, float]:
        return self.evaluate_features(*self.features(variables))
