"""Keys for the data pipeline's randomness: splitmix64, and keys derived from integer counters.

Every random choice of the pipeline (a dataset epoch's shuffle, a sequence's mask) is keyed on
integers such as (seed, dataset, epoch) or (seed, sample id), never on a running RNG state, so it
is the same whatever the rank layout, the micro-batch split or a resume in between.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

Word = TypeVar("Word", int, np.ndarray)


def splitmix64(x: Word) -> Word:
    """splitmix64's finalizer, a well-mixed 64-bit hash: nearby inputs give unrelated outputs.

    x: a Python int (taken modulo 2**64, so negative seeds work) or a numpy uint64 array
    (elementwise). The masks keep Python's unbounded ints to 64 bits; uint64 array arithmetic wraps
    modulo 2**64 by itself, so on arrays they change nothing, and both give the same bits.
    """
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
    return x ^ (x >> 31)


def derive_key(seed: int, *counters: int) -> int:
    """The 64-bit key of `counters` under `seed`: splitmix64 chained through them, e.g.
    derive_key(seed, a, b) = splitmix64(splitmix64(splitmix64(seed) ^ a) ^ b), so that keys of
    nearby counters are unrelated."""
    key = splitmix64(seed)
    for counter in counters:
        key = splitmix64(key ^ counter)
    return key
