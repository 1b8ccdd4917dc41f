"""Stable randomness: generators seeded from a hash of names (never Python's ``hash()``) and counter hashes.

The same key gives the same stream on every machine and every run, so generated files are reproducible.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_TO_UNIT = 1.0 / float(1 << 53)


def stable_seed(*parts: object) -> int:
    """A 128-bit integer from the parts' text; identical everywhere."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "little")


def rng(*parts: object) -> np.random.Generator:
    """A PCG64 generator for a named stream, e.g. ``rng("trades", exchange, symbol, day, window, scale)``."""
    return np.random.Generator(np.random.PCG64(stable_seed(*parts)))


def seed64(*parts: object) -> np.uint64:
    return np.uint64(stable_seed(*parts) & 0xFFFF_FFFF_FFFF_FFFF)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic): a good integer hash."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64, copy=False) + _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)


def as_u64(a: np.ndarray | int) -> np.ndarray:
    """Integers reinterpreted as uint64 (negative values wrap), for hashing."""
    arr = np.asarray(a)
    if arr.dtype == np.uint64:
        return arr
    return arr.astype(np.int64).view(np.uint64)


def hash_combine(seed: np.uint64 | int, *arrays: np.ndarray | int) -> np.ndarray:
    """Hash of a seed and integer arrays (broadcast together)."""
    h = np.asarray(seed, dtype=np.uint64)
    for a in arrays:
        h = mix64(np.bitwise_xor(h, as_u64(a)))
    return h


def unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def normal_from_hash(h: np.ndarray) -> np.ndarray:
    """Standard normals from hashes (Box-Muller on two derived uniforms)."""
    u1 = unit(mix64(h ^ np.uint64(0x1234567)))
    u2 = unit(mix64(h ^ np.uint64(0x7654321)))
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
