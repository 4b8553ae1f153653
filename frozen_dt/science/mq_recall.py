"""Multi-query associative recall: L key-value pairs, then L queries (every key once, in random order).

Tokens (interleaved, as :func:`frozen_dt.probes.tasks.recall_batch`): ``k_1 v_1 ... k_L v_L q_1 ... q_L``,
T = 3L. Keys are distinct ``bits``-bit strings (drawn without replacement), values uniform random bits; query
``q_i`` holds key ``k_{pi(i)}`` for a random permutation pi, and its target is ``v_{pi(i)}``. Features: the bits as
+-1 and a one-hot type (key, value, query), F = bits + 3. Every sequence gives L answers of ``bits`` bits, so a
test set of N sequences at length L scores N * L * bits predicted bits.

**No-recall baseline** (:func:`majority_error`): a rule that ignores which key is asked and predicts, per bit, the
majority over the sequence's L values (a tie costs 0.5, a coin flip). It is the best a model can do without
reading the queried key's value, so an error below it is the evidence of recall; it is printed beside every result.

Batches are generated from ``numpy.random.default_rng([stream, seed, step])``: batch ``step`` of a seed is the same
whenever it is drawn, so a resumed run sees the batches an uninterrupted one would. The test sets use a stream no
training seed can reach (:data:`TEST_STREAM`).
"""

from __future__ import annotations

import numpy as np

from frozen_dt.errors import FrozenDTError
from frozen_dt.probes.tasks import Batch, _signed

TRAIN_STREAM = 0x3A11
TEST_STREAM = 0x7E5731


def mq_recall_batch(rng: np.random.Generator, batch: int, length: int, bits: int = 8) -> Batch:
    if length < 1:
        raise FrozenDTError(f"recall length must be positive, got {length}")
    if length > 2 ** bits:
        raise FrozenDTError(f"recall length {length} needs more than the 2^{bits} distinct {bits}-bit keys")
    key_ids = np.stack([rng.choice(2 ** bits, size=length, replace=False) for _ in range(batch)])  # (B, L)
    keys = ((key_ids[..., None] >> np.arange(bits)) & 1).astype(np.float32)  # (B, L, bits)
    values = rng.integers(0, 2, size=(batch, length, bits)).astype(np.float32)
    order = np.argsort(rng.random((batch, length)), axis=1)  # (B, L): query i asks key order[:, i]
    rows = np.arange(batch)[:, None]
    T, F = 3 * length, bits + 3
    x = np.zeros((batch, T, F), np.float32)
    x[:, 0:2 * length:2, :bits] = _signed(keys)
    x[:, 0:2 * length:2, bits] = 1.0
    x[:, 1:2 * length:2, :bits] = _signed(values)
    x[:, 1:2 * length:2, bits + 1] = 1.0
    x[:, 2 * length:, :bits] = _signed(keys[rows, order])
    x[:, 2 * length:, bits + 2] = 1.0
    targets = np.zeros((batch, T, bits), np.float32)
    targets[:, 2 * length:] = values[rows, order]
    mask = np.zeros((batch, T), bool)
    mask[:, 2 * length:] = True
    return Batch(x, targets, mask)


def train_batch(seed: int, step: int, batch: int, min_len: int, max_len: int, bits: int = 8) -> Batch:
    """Training batch ``step`` of ``seed``: one L uniform in [min_len, max_len]."""
    rng = np.random.default_rng([TRAIN_STREAM, seed, step])
    return mq_recall_batch(rng, batch, int(rng.integers(min_len, max_len + 1)), bits)


def test_set(length: int, n: int, bits: int = 8) -> Batch:
    return mq_recall_batch(np.random.default_rng([TEST_STREAM, length, bits]), n, length, bits)


def majority_error(batch: Batch) -> float:
    """Per-bit error of the no-recall rule (majority of the sequence's values per bit; a tie costs 0.5)."""
    length = batch.inputs.shape[1] // 3
    bits = batch.targets.shape[-1]
    values = (batch.inputs[:, 1:2 * length:2, :bits] > 0).astype(np.float64)  # (B, L, bits)
    ones = values.sum(axis=1, keepdims=True)  # (B, 1, bits)
    targets = batch.targets[:, 2 * length:]  # (B, L, bits)
    error = np.where(2 * ones > length, targets == 0, np.where(2 * ones < length, targets == 1, 0.5))
    return float(error.astype(np.float64).mean())
