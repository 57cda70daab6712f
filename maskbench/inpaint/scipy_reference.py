"""SciPy reference for ROAD's imputation: the tests' oracle and the benchmark's baseline.

This mirrors the equations of ``NoisyLinearImputer.setup_sparse_system`` in ROAD
(github.com/tleemann/road_evaluation, ``road/imputations.py``): for every removed pixel
``i`` with in-bounds neighbours ``j`` (weights 1/6 edge, 1/12 diagonal)::

    s_i * x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij v_j,   s_i = sum_j w_ij

solved with ``scipy.sparse.linalg.spsolve`` in float64. The system is built with
vectorised COO assembly instead of ROAD's ``lil_matrix`` loop (same matrix, faster), so
timings against it are against a strong baseline.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)


def build_system(image: np.ndarray, keep: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
    """The sparse system ``(M, b)`` for one image.

    ``image`` is (C, H, W), ``keep`` is (H, W) bool (True = kept). ``M`` is the
    (N, N) symmetric positive definite matrix over the N removed pixels (row-major
    order), ``b`` is (N, C).
    """
    height, width = keep.shape
    flat_keep = keep.reshape(-1)
    unknown = np.flatnonzero(~flat_keep)
    var_index = np.full(height * width, -1, dtype=np.int64)
    var_index[unknown] = np.arange(unknown.size)
    rows0, cols0 = np.divmod(unknown, width)
    values = image.reshape(image.shape[0], -1).astype(np.float64)
    diag = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, image.shape[0]))
    coo_rows, coo_cols, coo_vals = [], [], []
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        r, c = rows0 + dy, cols0 + dx
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        diag[inside] += weight
        eq = np.flatnonzero(inside)
        nbr = r[inside] * width + c[inside]
        known = flat_keep[nbr]
        rhs[eq[known]] += weight * values[:, nbr[known]].T
        coo_rows.append(eq[~known])
        coo_cols.append(var_index[nbr[~known]])
        coo_vals.append(np.full(int((~known).sum()), -weight))
    coo_rows.append(np.arange(unknown.size))
    coo_cols.append(np.arange(unknown.size))
    coo_vals.append(diag)
    matrix = sp.coo_matrix(
        (np.concatenate(coo_vals), (np.concatenate(coo_rows), np.concatenate(coo_cols))),
        shape=(unknown.size, unknown.size),
    ).tocsc()
    return matrix, rhs


def scipy_road_solution(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Noise-free ROAD imputation of one (C, H, W) image with (H, W) bool ``keep``.

    Returns a float64 (C, H, W) array: kept pixels copied, removed pixels solved with
    ``spsolve``. Requires at least one kept pixel (otherwise the system is singular).
    """
    out = image.astype(np.float64).copy()
    if keep.all():
        return out
    matrix, rhs = build_system(image, keep)
    solution = spsolve(matrix, rhs)
    solution = solution.reshape(rhs.shape)
    flat = out.reshape(out.shape[0], -1)
    flat[:, ~keep.reshape(-1)] = solution.T
    return out
