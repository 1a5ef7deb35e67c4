"""Chunked Euclidean distances, k-NN radii and nearest neighbours for the sample-quality metrics.

A 10,000 × 10,000 distance matrix in float64 is 800 MB, so nothing here builds one whole: distances
come in row blocks of at most ``max_block_bytes`` (default 64 MiB). While a caller's loop advances,
its previous block and the next one are both alive, and callers make boolean masks of a block, so
peak extra memory is about 2.5 × that: ~160 MB, under the ~256 MB budget (measured: 10,000 × 10,000
precision/recall adds ~150 MB of resident memory).

Distances use the expansion ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, a matrix product, in float64. Round-off
can make a squared distance slightly negative, so it is clamped at 0 before the square root.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

DEFAULT_BLOCK_BYTES = 64 * 2**20
_FLOAT64_BYTES = 8


def as_features(features: np.ndarray, name: str = "features", min_rows: int = 1) -> np.ndarray:
    """``features`` as a finite float64 (N, D) array; fail loudly on anything else."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {array.shape}")
    if array.shape[0] < min_rows or array.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} rows of ≥ 1 feature, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")


def _rows_per_block(n_columns: int, max_block_bytes: int) -> int:
    return max(1, max_block_bytes // (_FLOAT64_BYTES * max(1, n_columns)))


def _distances(rows: np.ndarray, rows_sq: np.ndarray, cols: np.ndarray, cols_sq: np.ndarray):
    """‖rows_i − cols_j‖ for float64 inputs and their squared norms; (R, C)."""
    block = rows @ cols.T
    block *= -2.0
    block += rows_sq[:, None]
    block += cols_sq[None, :]
    np.maximum(block, 0.0, out=block)  # round-off can dip below 0 for near-identical points
    return np.sqrt(block, out=block)


def iter_distance_blocks(
    a: np.ndarray, b: np.ndarray, max_block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)`` where ``block[r, j] = ‖a[start + r] − b[j]‖``, in row order.

    Each block has all of b's columns and as many of a's rows as fit in ``max_block_bytes``.
    """
    a = as_features(a, "a")
    b = as_features(b, "b")
    _check_same_dim(a, b)
    b_sq = np.einsum("ij,ij->i", b, b)
    step = _rows_per_block(len(b), max_block_bytes)
    for start in range(0, len(a), step):
        rows = a[start : start + step]
        yield start, _distances(rows, np.einsum("ij,ij->i", rows, rows), b, b_sq)


def pairwise_distances(
    a: np.ndarray, b: np.ndarray, max_block_bytes: int = DEFAULT_BLOCK_BYTES
) -> np.ndarray:
    """The whole (N, M) Euclidean distance matrix; only for sets small enough to hold it."""
    return np.concatenate([block for _, block in iter_distance_blocks(a, b, max_block_bytes)])


def knn_radii(
    features: np.ndarray, k: int, max_block_bytes: int = DEFAULT_BLOCK_BYTES
) -> np.ndarray:
    """Distance from each row to its k-th nearest neighbour among the other rows; (N,).

    The point itself is excluded by index, not by value, so duplicated points get radius 0
    as they should (the k-NN ball of Kynkäänniemi et al. 2019 and Naeem et al. 2020).
    """
    features = as_features(features)
    if not 1 <= k < len(features):
        raise ValueError(f"k must be in [1, N − 1] = [1, {len(features) - 1}], got {k}")
    radii = np.empty(len(features))
    for start, block in iter_distance_blocks(features, features, max_block_bytes):
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # a point is not its own neighbour
        block.partition(k - 1, axis=1)  # in place: np.partition would copy the whole block
        radii[start : start + len(block)] = block[:, k - 1]
    return radii


def _default_chunk(dim: int) -> int:
    # The float64 query and reference chunks together take at most the block budget; the
    # (chunk, chunk) distance tile (≤ 32 MiB at the 2048 cap) is small beside them.
    return int(min(2048, max(1, DEFAULT_BLOCK_BYTES // (2 * _FLOAT64_BYTES * dim))))


def nearest_neighbours(
    queries: np.ndarray, references: np.ndarray, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of its nearest reference row and the Euclidean distance.

    Returns ``(indices (Q,), distances (Q,))``: plain L2 in the inputs' own units (callers that
    want an RMS per-coordinate distance divide by sqrt(D), as the memorisation report does).
    Both sets are tiled ``chunk`` rows at a time and converted to float64 per tile, so a
    uint8 training set of any size is never copied whole to float64. Ties go to the lowest
    reference index. The returned distance is recomputed directly from the difference of the
    chosen pair, so an exact copy reports exactly 0 rather than the expansion's round-off.
    """
    queries = np.asarray(queries)
    references = np.asarray(references)
    for name, array in (("queries", queries), ("references", references)):
        if array.ndim != 2 or len(array) == 0:
            raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {array.shape}")
    _check_same_dim(queries, references)
    chunk = chunk or _default_chunk(queries.shape[1])
    indices = np.empty(len(queries), dtype=np.int64)
    distances = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        query_rows = as_features(queries[start : start + chunk], "queries")
        best = _nearest_in_chunks(query_rows, references, chunk)
        stop = start + len(query_rows)
        indices[start:stop] = best
        chosen = as_features(references[best], "references")
        distances[start:stop] = np.linalg.norm(query_rows - chosen, axis=1)
    return indices, distances


def _nearest_in_chunks(query_rows: np.ndarray, references: np.ndarray, chunk: int) -> np.ndarray:
    """Index of the nearest reference for each query row, scanning references chunk by chunk."""
    query_sq = np.einsum("ij,ij->i", query_rows, query_rows)
    best_distance = np.full(len(query_rows), np.inf)
    best_index = np.zeros(len(query_rows), dtype=np.int64)
    for start in range(0, len(references), chunk):
        ref_rows = as_features(references[start : start + chunk], "references")
        tile = _distances(query_rows, query_sq, ref_rows, np.einsum("ij,ij->i", ref_rows, ref_rows))
        tile_best = np.argmin(tile, axis=1)  # first minimum: lowest index within the chunk
        tile_distance = tile[np.arange(len(tile)), tile_best]
        better = tile_distance < best_distance  # strict: earlier (lower-index) chunks win ties
        best_distance[better] = tile_distance[better]
        best_index[better] = start + tile_best[better]
    return best_index
