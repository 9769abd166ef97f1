"""Perceptual hashes for near-duplicate images, written with PIL + numpy.

dHash (Krawetz): shrink to (size+1) x size grey pixels and keep one bit per horizontal
neighbour pair, "is the left pixel brighter". Resizing, re-encoding and small colour or
brightness changes keep most bits; a different picture flips about half of them.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIZE = 8  # 64-bit hashes
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def dhash(image: Image.Image, size: int = HASH_SIZE) -> bytes:
    """size*size bits, packed (8 bytes for size 8)."""
    grey = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.packbits(grey[:, 1:] < grey[:, :-1]).tobytes()  # (size, size) bits


THUMB = 16  # side of the grey thumbnail that confirms a near-duplicate candidate
MAX_THUMB_DIFF = 0.04  # mean absolute difference (0..1 grey) two near-duplicates may have


def thumbnail(image: Image.Image) -> np.ndarray:
    """(THUMB, THUMB) float16 grey in [0, 1], contrast-normalised: confirms hash candidates, since a
    64-bit hash of a tiny image (8x8 digits) cannot tell similar strokes from copies."""
    t = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float32)
    lo, hi = t.min(), t.max()
    return ((t - lo) / max(hi - lo, 1.0)).astype(np.float16)


def same_picture(a: np.ndarray, b: np.ndarray, max_diff: float = MAX_THUMB_DIFF) -> bool:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) <= max_diff


def near_pairs(hashes: list[bytes], max_distance: int, chunk: int = 512) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) for every pair i < j whose hashes differ in <= max_distance bits."""
    if len(hashes) < 2:
        return []
    h = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), -1)  # (N, bytes)
    pairs = []
    for start in range(0, len(h), chunk):
        block = h[start:start + chunk]
        dist = _POPCOUNT[block[:, None, :] ^ h[None, :, :]].sum(-1, dtype=np.int32)  # (chunk, N)
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj):
            if i < j:
                pairs.append((int(i), int(j), int(dist[i - start, j])))
    return pairs
