"""Perceptual hashes for near-duplicate images, written with PIL + numpy, and the one rule that
finds duplicates: `r1 data inspect` reports them, and a seeded split keeps each group in one split
(`data.group_duplicates`), so evaluation never scores a copy of a training image.

dHash (Krawetz): shrink to (size+1) x size grey pixels and keep one bit per horizontal
neighbour pair, "is the left pixel brighter". Resizing, re-encoding and small colour or
brightness changes keep most bits; a different picture flips about half of them. A pair of
images is a duplicate when its bytes (or pixels) are equal, or when its hashes differ in at
most NEAR_DISTANCE bits and its grey thumbnails agree (`same_picture`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HASH_SIZE = 8  # 64-bit hashes
NEAR_DISTANCE = 4  # dHash bits (of 64) two images may differ in and count as near-duplicates
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


@dataclass
class Signature:
    """What the duplicate rule compares of one image: content hash, dHash, grey thumbnail."""
    sha1: str
    hash: bytes
    thumb: np.ndarray


def signature(image: Image.Image, sha1: str = "") -> Signature:
    """`sha1`: of the file's bytes; empty: of the decoded pixels."""
    return Signature(sha1 or hashlib.sha1(np.asarray(image).tobytes()).hexdigest(), dhash(image), thumbnail(image))


def file_signature(path: str | Path) -> Signature | None:
    """The signature of an image file (None when it cannot be read). JPEGs decode at 1/8 scale:
    the hash and thumbnail need no more."""
    path = Path(path)
    try:
        data = path.read_bytes()
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))
            im.load()
            return signature(im, hashlib.sha1(data).hexdigest())
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def duplicate_pairs(signatures: list[Signature | None], max_distance: int = NEAR_DISTANCE) -> list[tuple[int, int, str]]:
    """(i, j, "exact"|"near"), i < j, sorted, over the images that have a signature: the same bytes
    (or pixels), or dHash within max_distance bits and thumbnails that agree."""
    ok = [i for i, s in enumerate(signatures) if s is not None]
    first: dict[str, int] = {}
    pairs = []
    for i in ok:
        sha = signatures[i].sha1
        if sha in first:
            pairs.append((first[sha], i, "exact"))
        else:
            first[sha] = i
    for a, b, _d in near_pairs([signatures[i].hash for i in ok], max_distance):
        i, j = ok[a], ok[b]
        si, sj = signatures[i], signatures[j]
        if si.sha1 != sj.sha1 and same_picture(si.thumb, sj.thumb):
            pairs.append((i, j, "near"))
    return sorted(pairs)


def duplicate_groups(n: int, pairs: list[tuple[int, int, str]]) -> list[int]:
    """Group id per item (0..n-1): items linked by duplicate pairs, directly or through others, share
    one (the smallest index of the group); every other item is its own group."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]
