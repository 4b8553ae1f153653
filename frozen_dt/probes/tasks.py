"""Synthetic probe tasks with exact targets, generated from a ``numpy.random.Generator``.

Every task returns a :class:`Batch`: ``inputs`` (B, T, F) float32, ``targets`` (B, T, P) float32 bits in {0, 1},
``target_mask`` (B, T) bool (the positions whose targets count). Bits enter the model as +-1 (0 = masked) and are
predicted as P independent logits (per-bit binary cross-entropy, which equals FPT's per-bit 2-way cross-entropy);
the metric is the **per-bit error**: the fraction of predicted bits (logit > 0) that differ from the target over
the counted positions.

Associative recall (``recall``; NTM-style, the induction/copy pattern)
    ``L`` items, each a *key* of ``bits`` bits (default 8) and a *value* of ``bits`` bits, presented as ``2L``
    tokens ``k_1, v_1, k_2, v_2, ..., k_L, v_L``, then one *query* token holding one of the keys (uniformly
    chosen). The target, read at the query token only, is the value that followed that key. Keys are distinct
    within a sequence (drawn without replacement from the 2^bits keys), values are uniform random bits (repeats
    allowed). Token features: the ``bits`` bits as +-1, then a one-hot type (key, value, query): F = bits + 3.
    Sequence length T = 2L + 1. Training batches draw one L uniformly from ``[min_len, max_len]`` per batch;
    evaluation reports the error separately for each L of ``--lengths`` (default 5, 10, 20, 30). The test set is
    a fixed set of sequences generated from a seed stream disjoint from every training stream (see
    :func:`test_rng`), identical for all arms and seeds. ``format="pair"`` is a variant with one token per item
    (key || value, F = 2*bits + 2, T = L + 1), solvable by a single content-addressed attention read.

Bit memory (``bit-memory``; FPT, Lu et al.)
    ``n_strings`` (5) random +-1 strings of ``length`` bits, then one of them (uniformly chosen) with each bit
    zeroed with probability 0.5; the target is that string, un-masked. Strings are cut in patches of ``patch`` bits,
    one token per patch: T = (n_strings + 1) * length / patch, F = patch; the targets are read at the last
    length / patch tokens (the masked copy), patch j predicting the full patch j. FPT's size: length 1000, patch 50
    (120 tokens); the CPU default here is length 100, patch 10 (60 tokens).

Bit XOR (``bit-xor``; FPT)
    Two random bit strings of ``length`` (5) bits, one bit per token (``patch`` 1): T = 2 * length, F = patch.
    The targets, read at the tokens of the second string, are the XOR of the two strings (token length + j sees
    a_j and b_j).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from frozen_dt.errors import FrozenDTError

TASKS = ("recall", "bit-memory", "bit-xor")
TEST_STREAM = 0x7E57  # test-set seeds are [TEST_STREAM, ...]; training seeds are [seed, TRAIN_STREAM, ...]
TRAIN_STREAM = 0x7A1


@dataclass
class Batch:
    inputs: np.ndarray  # (B, T, F) float32
    targets: np.ndarray  # (B, T, P) float32 in {0, 1}
    target_mask: np.ndarray  # (B, T) bool

    def __len__(self) -> int:
        return len(self.inputs)


def train_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([TRAIN_STREAM, seed])


def test_rng(length: int = 0) -> np.random.Generator:
    """The test set's generator: independent of every training seed (different first entropy word)."""
    return np.random.default_rng([TEST_STREAM, length])


def _signed(bits: np.ndarray) -> np.ndarray:
    return (2.0 * bits - 1.0).astype(np.float32)


# --- associative recall -----------------------------------------------------------------------------------------


def recall_dims(bits: int, fmt: str = "interleaved") -> tuple[int, int]:
    """(input features, output bits) of the recall task."""
    return (bits + 3, bits) if fmt == "interleaved" else (2 * bits + 2, bits)


def recall_batch(rng: np.random.Generator, batch: int, length: int, bits: int = 8,
                 fmt: str = "interleaved") -> Batch:
    if length < 1:
        raise FrozenDTError(f"recall length must be positive, got {length}")
    if length > 2 ** bits:
        raise FrozenDTError(f"recall length {length} needs more than the 2^{bits} distinct {bits}-bit keys")
    if fmt not in ("interleaved", "pair"):
        raise FrozenDTError(f"unknown recall format {fmt!r}: interleaved or pair")
    key_ids = np.stack([rng.choice(2 ** bits, size=length, replace=False) for _ in range(batch)])  # (B, L)
    keys = ((key_ids[..., None] >> np.arange(bits)) & 1).astype(np.float32)  # (B, L, bits)
    values = rng.integers(0, 2, size=(batch, length, bits)).astype(np.float32)
    query = rng.integers(0, length, size=batch)
    rows = np.arange(batch)
    target_bits = values[rows, query]  # (B, bits)
    if fmt == "interleaved":
        T, F = 2 * length + 1, bits + 3
        x = np.zeros((batch, T, F), np.float32)
        x[:, 0:2 * length:2, :bits] = _signed(keys)
        x[:, 0:2 * length:2, bits] = 1.0
        x[:, 1:2 * length:2, :bits] = _signed(values)
        x[:, 1:2 * length:2, bits + 1] = 1.0
        x[:, -1, :bits] = _signed(keys[rows, query])
        x[:, -1, bits + 2] = 1.0
    else:
        T, F = length + 1, 2 * bits + 2
        x = np.zeros((batch, T, F), np.float32)
        x[:, :length, :bits] = _signed(keys)
        x[:, :length, bits:2 * bits] = _signed(values)
        x[:, :length, 2 * bits] = 1.0
        x[:, -1, :bits] = _signed(keys[rows, query])
        x[:, -1, 2 * bits + 1] = 1.0
    targets = np.zeros((batch, T, bits), np.float32)
    targets[:, -1] = target_bits
    mask = np.zeros((batch, T), bool)
    mask[:, -1] = True
    return Batch(x, targets, mask)


# --- FPT bit memory and bit XOR ---------------------------------------------------------------------------------


def _check_patch(length: int, patch: int) -> None:
    if length < 1 or patch < 1 or length % patch:
        raise FrozenDTError(f"--bit-length {length} must be a positive multiple of --patch {patch}")


def bit_memory_batch(rng: np.random.Generator, batch: int, length: int = 100, patch: int = 10,
                     n_strings: int = 5, p_mask: float = 0.5) -> Batch:
    _check_patch(length, patch)
    strings = rng.integers(0, 2, size=(batch, n_strings, length)).astype(np.float32)
    chosen = rng.integers(0, n_strings, size=batch)
    target = strings[np.arange(batch), chosen]  # (B, length)
    keep = rng.random((batch, length)) >= p_mask
    masked = _signed(target) * keep
    seq = np.concatenate([_signed(strings).reshape(batch, -1), masked], axis=1)  # (B, (n+1)*length)
    n_patches = length // patch
    x = seq.reshape(batch, (n_strings + 1) * n_patches, patch).astype(np.float32)
    T = x.shape[1]
    targets = np.zeros((batch, T, patch), np.float32)
    targets[:, -n_patches:] = target.reshape(batch, n_patches, patch)
    mask = np.zeros((batch, T), bool)
    mask[:, -n_patches:] = True
    return Batch(x, targets, mask)


def bit_xor_batch(rng: np.random.Generator, batch: int, length: int = 5, patch: int = 1) -> Batch:
    _check_patch(length, patch)
    a = rng.integers(0, 2, size=(batch, length))
    b = rng.integers(0, 2, size=(batch, length))
    n_patches = length // patch
    x = np.concatenate([_signed(a), _signed(b)], axis=1).reshape(batch, 2 * n_patches, patch).astype(np.float32)
    targets = np.zeros((batch, 2 * n_patches, patch), np.float32)
    targets[:, n_patches:] = (a ^ b).reshape(batch, n_patches, patch)
    mask = np.zeros((batch, 2 * n_patches), bool)
    mask[:, n_patches:] = True
    return Batch(x, targets, mask)


# --- one interface for the trainer --------------------------------------------------------------------------------


@dataclass
class TaskSpec:
    """A task with its sizes: ``sample(rng, batch, length=None)``, feature and output sizes, eval lengths."""

    name: str
    bits: int = 8  # recall: bits per key / value
    fmt: str = "interleaved"  # recall: token format
    min_len: int = 2  # recall: training lengths
    max_len: int = 30
    bit_length: int = 100  # bit-memory / bit-xor: string length
    patch: int = 10  # bits per token
    n_strings: int = 5

    def __post_init__(self):
        if self.name not in TASKS:
            raise FrozenDTError(f"unknown probe task {self.name!r}: expected one of {', '.join(TASKS)}")

    @property
    def in_features(self) -> int:
        return recall_dims(self.bits, self.fmt)[0] if self.name == "recall" else self.patch

    @property
    def out_bits(self) -> int:
        return self.bits if self.name == "recall" else self.patch

    def sample(self, rng: np.random.Generator, batch: int, length: int | None = None) -> Batch:
        if self.name == "recall":
            if length is None:
                length = int(rng.integers(self.min_len, self.max_len + 1))
            return recall_batch(rng, batch, length, self.bits, self.fmt)
        if self.name == "bit-memory":
            return bit_memory_batch(rng, batch, self.bit_length, self.patch, self.n_strings)
        return bit_xor_batch(rng, batch, self.bit_length, self.patch)


def parse_lengths(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise FrozenDTError(f"bad --lengths {text!r}: expected comma-separated integers such as 5,10,20,30") from None
    if not lengths or min(lengths) < 1:
        raise FrozenDTError(f"bad --lengths {text!r}: expected positive integers")
    return lengths
