"""Batched multigrid-preconditioned conjugate gradients for ROAD's imputation system.

The unknowns of one image are its removed pixels ``U``. With ``w`` the 8-neighbour
weights (1/6 for edge neighbours, 1/12 for diagonal ones) and ``s_i`` the sum of the
weights of pixel ``i``'s in-bounds neighbours, ROAD's equations are::

    s_i x_i - sum_{j in U} w_ij x_j = sum_{j kept} w_ij v_j        (i in U)

The matrix ``M = S - W_UU`` is symmetric (``w_ij = w_ji``) and, as long as every
8-connected component of ``U`` touches a kept pixel, an irreducibly diagonally dominant
M-matrix, hence symmetric positive definite. The solver works with ``A = 12 M`` and the
right-hand side ``12 b``: all coefficients are then small integers (edge neighbours 2,
diagonal ones 1, diagonal ``12 s``), exact in any float format; the solution is the same.

Layout: a vector is stored per (sample, channel) as its padded grid (a zero border, see
:class:`_Grid`) flattened to one axis, shape ``(B, C, n)``; a neighbour at ``(dy, dx)``
is then a fixed offset, so stencils are sums of contiguous shifted slices. Vectors are
zero at kept pixels and on the border. All samples and channels are solved together and
each (sample, channel) system stops on its own.

Preconditioner: one symmetric multigrid V-cycle -- damped Jacobi pre- and
post-smoothing, vertex-centred bilinear interpolation ``P`` (coarse point ``J`` on fine
point ``2J``) masked to the unknowns, restriction ``P^T``, Galerkin coarse operators
``P^T A P`` (3x3 stencils again), and a dense Cholesky inverse on the coarsest grid (at
most 8 x 8 points). With convergent smoothers and SPD coarse operators this V-cycle is a
symmetric positive definite operator, as conjugate gradients requires.

Float32 round-off: the stopping test applies the V-cycle to the true residual
``b - A x``, and in float32 that residual carries round-off of about ``1e-7 |x|`` per
pixel, which the V-cycle (like ``A^-1``) amplifies. How much depends on the mask: a hole
surrounded by kept pixels amplifies it little, but when the only kept pixels are a tiny
region far from most of the unknowns (say one pixel in a corner of a 224 x 224 image),
``A`` is nearly the singular Neumann operator (its smallest eigenvalue shrinks like
``1 / (N^2 log N)``) and the round-off alone gives an error estimate of ``1e-4`` or
more. Such a system's estimate stops decreasing; it is then switched to a float64
residual (see :meth:`MultigridSolver.solve`).

Only torch operations are used (no Python loop over pixels), so the solver runs on
whatever device the images are on. Every operation acts on each sample separately and
reductions are finished in float64, so a sample's result does not depend on the other
samples of the batch.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Literal

import torch

from maskbench.errors import MaskbenchError
from maskbench.inpaint._buffers import BufferPool

# Vertex-centred bilinear interpolation weight by 1-D distance to the coarse point.
_P_WEIGHT = {-1: 0.5, 0: 1.0, 1: 0.5}
# (e, d, D, weight): fine offset e from the coarse point, stencil offset d, coarse offset
# D; the 1-D Galerkin product gets p(e) * p(e + d - 2D) * a[2I + e, d] at [I, D].
_GALERKIN_TERMS = tuple(
    (e, d, big_d, _P_WEIGHT[e] * _P_WEIGHT[e + d - 2 * big_d])
    for e in (-1, 0, 1)
    for d in (-1, 0, 1)
    for big_d in (-1, 0, 1)
    if e + d - 2 * big_d in _P_WEIGHT
)

# Jacobi damping. On the fine grid Gershgorin bounds the eigenvalues of D^-1 A by 2, so
# 0.8 is safe (iteration counts barely change between 0.7 and 1.1). Galerkin operators
# get at most 0.8, less if their Gershgorin bound requires it (see _jacobi_scale).
_FINE_DAMPING = 0.8
_COARSE_DAMPING = 0.8
_COARSEST_SIZE = 8  # a grid with at most this many points per side is solved densely
_CHUNK_BYTES = 32 << 20  # CPU: fine-grid working set per sweep, to stay in (L3) cache
_CHUNK_VECTORS = 12  # fine-grid vectors (B, C, n) a sweep touches, roughly
# Below this tol, float32 round-off in the residual (about 1e-7 spread over a hole, then
# amplified by the inverse operator) could pass for error: evaluate it in float64 from the
# start. Above it, only systems that stagnate switch (see MultigridSolver.solve).
_FLOAT32_SAFE_TOL = 3e-5
# A system whose error estimate is not below this fraction of its best earlier estimate
# has stagnated. Multigrid-preconditioned CG reduces it by 3x to 10x per iteration (worst
# measured ratio 0.32 over random pixels, patches and holes, 224 x 224), so only a
# round-off floor (or a failure of the preconditioner) stalls it.
_STALL_RATIO = 0.5
# A float32 sample switches to a float64 residual when the measured round-off floor of
# its error estimate (see MultigridSolver._round_off_floor) exceeds this fraction of tol.
_FLOOR_FRACTION = 0.25


class RoadConvergenceError(MaskbenchError, RuntimeError):
    """The ROAD solver did not reach the requested tolerance (the message says by how much).

    Raised instead of returning an unconverged result: raise ``max_iter`` or loosen
    ``tol``.
    """


@dataclass
class SolveInfo:
    """What the solver did.

    Attributes:
        iterations: conjugate-gradient iterations (all systems together).
        error_estimate: ``(B, C)`` multigrid estimate of each system's max abs error
            before its final correction, relative to its ``scale`` (the largest kept
            ``|value|``).
        levels: number of multigrid levels.
        float64_residual: ``(B,)`` bool, True for the samples whose residual was
            evaluated in float64 by the end: all of them for float64 systems or when
            ``tol`` is below 3e-5, otherwise those switched after stagnating (see
            :meth:`MultigridSolver.solve`).
        restarts: conjugate-gradient restarts (all systems together): one per system
            and iteration in which its error estimate stagnated.
    """

    iterations: int
    error_estimate: torch.Tensor
    levels: int
    float64_residual: torch.Tensor
    restarts: int = 0


# -- grids ---------------------------------------------------------------------------


def coarse_size(n: int) -> int:
    """Coarse points of an axis of ``n`` fine points (``J`` on ``2J``; one may be a ghost)."""
    return n // 2 + 1


@dataclass(frozen=True)
class _Grid:
    """An ``h x w`` grid stored padded to ``hp x wp`` and flattened to ``n`` entries.

    Point ``(i, j)`` sits at ``(i + 1) * wp + j + 1``. The padding (one row/column
    before, one or two after) is zero and leaves room for the stride-2 restriction:
    ``hp = 2 * coarse_size(h) + 1``.
    """

    h: int
    w: int

    @property
    def hp(self) -> int:
        """Padded height."""
        return 2 * coarse_size(self.h) + 1

    @property
    def wp(self) -> int:
        """Padded width (the flat stride of a row)."""
        return 2 * coarse_size(self.w) + 1

    @property
    def n(self) -> int:
        """Flat length."""
        return self.hp * self.wp

    @property
    def lo(self) -> int:
        """First flat index whose 8 neighbours are all stored."""
        return self.wp + 1

    @property
    def hi(self) -> int:
        """One past the last flat index whose 8 neighbours are all stored."""
        return self.n - self.wp - 1

    def offset(self, dy: int, dx: int) -> int:
        """Flat offset of the neighbour at ``(dy, dx)``."""
        return dy * self.wp + dx

    def view2d(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` as ``(..., hp, wp)`` (a view)."""
        return t.view(*t.shape[:-1], self.hp, self.wp)

    def interior(self, t: torch.Tensor) -> torch.Tensor:
        """The ``(..., h, w)`` interior of a flat ``(..., n)`` tensor (a view)."""
        return self.view2d(t)[..., 1 : self.h + 1, 1 : self.w + 1]

    def flat(self, t: torch.Tensor) -> torch.Tensor:
        """Copy ``(..., h, w)`` into a new zero-bordered flat ``(..., n)`` tensor."""
        out = t.new_zeros((*t.shape[:-2], self.n))
        self.interior(out).copy_(t)
        return out


def _chunks(batch: int, chunk: int) -> list[slice]:
    """Split ``batch`` samples into as few chunks of at most ``chunk`` as possible, of
    near-equal sizes (13 + 3 would cost the small chunk as many operations as the big)."""
    count = -(-batch // chunk)
    bounds = [batch * k // count for k in range(count + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


# -- the fine operator ---------------------------------------------------------------


def neighbour_weight(dy: int, dx: int) -> int:
    """12 x ROAD's weight of the neighbour at ``(dy, dx)``: 2 edge, 1 diagonal, 0 self."""
    if dy == 0 and dx == 0:
        return 0
    return 1 if dy != 0 and dx != 0 else 2


def _filter_121(x: torch.Tensor, grid: _Grid, rows: torch.Tensor, out: torch.Tensor) -> None:
    """``out = K x`` for flat ``x``, ``K = (1, 2, 1) x (1, 2, 1)``, at flat ``[lo, hi)``.

    ``rows`` is scratch like ``x``; entries of ``rows``/``out`` outside the ranges
    written here are never touched (keep them zero). ``K`` has 4 at its centre, so
    ``12 W x = K x - 4 x`` for ROAD's neighbour weights ``W``.
    """
    n, wp, lo, hi = grid.n, grid.wp, grid.lo, grid.hi
    mid = rows[..., 1 : n - 1]
    torch.add(x[..., 0 : n - 2], x[..., 2:n], out=mid)
    mid.add_(x[..., 1 : n - 1], alpha=2.0)
    target = out[..., lo:hi]
    torch.add(rows[..., lo - wp : hi - wp], rows[..., lo + wp : hi + wp], out=target)
    target.add_(rows[..., lo:hi], alpha=2.0)


def _filtered(x: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """``K x`` for flat ``x`` into a new tensor (zero outside ``[lo, hi)``)."""
    out = torch.zeros_like(x)
    _filter_121(x, grid, torch.zeros_like(x), out)
    return out


class _FineOperator:
    """``A = 12 M`` on the finest grid: two separable passes and two fused multiply-adds.

    For ``x`` zero outside ``U``: ``12 W x = K x - 4 x`` and ``A x = c1 x - c2 (K x)``
    with ``c2 = U`` and ``c1 = U (12 s + 4) = U (K inside)``, ``inside`` marking the
    pixels that exist (``12 s`` is ``K inside - 4`` at a pixel that exists).
    """

    def __init__(self, grid: _Grid, unknown: torch.Tensor, inside: torch.Tensor | None) -> None:
        """``unknown``/``inside``: ``(B, h, w)`` float; ``inside`` None means all pixels."""
        self.grid = grid
        self.c2 = grid.flat(unknown.unsqueeze(1))  # (B, 1, n): also the fine-grid mask
        if inside is None:
            ones = grid.flat(
                torch.ones((1, 1, grid.h, grid.w), dtype=unknown.dtype, device=unknown.device)
            )
            inside_sum = _filtered(ones, grid)
        else:
            inside_sum = _filtered(grid.flat(inside.unsqueeze(1)), grid)
        self.c1 = self.c2 * inside_sum
        self.diag = self.c1 - 4.0 * self.c2  # 12 s on U, 0 elsewhere
        self.dinv = _FINE_DAMPING * self.c2 / self.diag.clamp_min(1e-30)

    def apply(self, sl: slice, x: torch.Tensor, out: torch.Tensor, work: _FineWork) -> None:
        """``out = A x`` for samples ``sl``."""
        filtered = work.filter(x)
        torch.mul(x, self.c1[sl], out=out)
        out.addcmul_(filtered, self.c2[sl], value=-1.0)

    def residual(
        self, sl: slice, r: torch.Tensor, x: torch.Tensor, out: torch.Tensor, work: _FineWork
    ) -> None:
        """``out = r - A x`` for samples ``sl``."""
        filtered = work.filter(x)
        torch.addcmul(r, self.c1[sl], x, value=-1.0, out=out)
        out.addcmul_(filtered, self.c2[sl])

    def accurate_residual(
        self,
        sl: slice,
        r: torch.Tensor,
        x: torch.Tensor,
        out: torch.Tensor,
        work: _FineWork,
        index: torch.Tensor | None = None,
    ) -> None:
        """``out = r - A x`` evaluated in float64, then rounded to ``out``'s dtype.

        In float32, rounding in ``A x`` leaves a residual of about 1e-7 spread over a
        hole, which ``A^-1`` amplifies by up to the condition number (thousands for a
        112 x 112 hole, far more when the only kept pixels are a few in a corner).
        Evaluated in float64, the error estimate built on the residual is good down to
        what float32 can represent of ``x``. ``index`` (positions within ``sl``): only
        those samples' rows of ``out`` are written (elementwise arithmetic, so each row
        is the same as in a full evaluation).
        """
        if index is None:
            out.copy_(self.residual64(sl, r, x, work))
        else:
            out.index_copy_(0, index, self.residual64(sl, r, x, work, index).to(out.dtype))

    def residual64(
        self,
        sl: slice,
        r: torch.Tensor,
        x: torch.Tensor,
        work: _FineWork,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``r - A x`` in float64 (for the rows ``index`` of ``sl`` only, if given), in
        float64 scratch of ``work`` (valid until the next call)."""
        c1, c2 = self.c1[sl], self.c2[sl]
        if index is not None:
            c1, c2, r, x = c1[index], c2[index], r[index], x[index]
        x64, rows, filtered = work.wide(x.shape[0])
        x64.copy_(x)
        _filter_121(x64, self.grid, rows, filtered)
        torch.addcmul(r, c1, x64, value=-1.0, out=x64)
        return x64.addcmul_(filtered, c2)

    def rhs(self, sl: slice, known_values: torch.Tensor, work: _FineWork) -> torch.Tensor:
        """``12 b = U (K v)``, flat, for values zero at unknown pixels (``(b, C, h, w)``).

        (The centre term of ``12 W = K - 4`` vanishes because ``v`` is zero on ``U``.)
        """
        return work.filter(self.grid.flat(known_values)) * self.c2[sl]

    def stencil(self, sl: slice) -> torch.Tensor:
        """The 3x3 stencil ``(b, 3, 3, h, w)`` of ``U A U`` for samples ``sl``.

        Entry ``[:, dy + 1, dx + 1, i, j]`` couples ``(i, j)`` with ``(i + dy, j + dx)``;
        rows and columns of kept pixels are zero.
        """
        grid = self.grid
        unknown = grid.interior(self.c2[sl])[:, 0]
        padded = grid.view2d(self.c2[sl])[:, 0]
        h, w = grid.h, grid.w
        stencil = unknown.new_empty((unknown.shape[0], 3, 3, h, w))
        for a in range(3):
            for b in range(3):
                if (a, b) == (1, 1):
                    stencil[:, 1, 1] = grid.interior(self.diag[sl])[:, 0]
                else:
                    neighbour = padded[:, a : a + h, b : b + w]
                    torch.mul(unknown, neighbour, out=stencil[:, a, b])
                    stencil[:, a, b].mul_(-neighbour_weight(a - 1, b - 1))
        return stencil


class _FineWork:
    """Chunk-sized scratch for the fine grid (one sweep over the batch reuses it)."""

    def __init__(self, like: torch.Tensor, chunk: int, channels: int, grid: _Grid) -> None:
        shape = (chunk, channels, grid.n)
        self.grid = grid
        self._rows = like.new_zeros(shape)
        self._filtered = like.new_zeros(shape)
        self.tmp = like.new_empty(shape)
        self.ap = like.new_empty(shape)
        self.product = like.new_empty(shape)
        self._shape = shape
        self._wide: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def wide(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float64 scratch ``(x, rows, filtered)`` for ``count`` samples, allocated on
        first use (only float32 solves that evaluate a float64 residual need it)."""
        if self._wide is None:
            self._wide = (
                self._rows.new_empty(self._shape, dtype=torch.float64),
                self._rows.new_zeros(self._shape, dtype=torch.float64),
                self._rows.new_zeros(self._shape, dtype=torch.float64),
            )
        return self._wide[0][:count], self._wide[1][:count], self._wide[2][:count]

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """``K x`` into scratch (see :func:`_filter_121`)."""
        count = x.shape[0]
        out = self._filtered[:count]
        _filter_121(x, self.grid, self._rows[:count], out)
        return out

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per (sample, channel) dot products (float64) of flat fine-grid tensors.

        Row sums first (each grid row reduced on its own, whatever the batch), then the
        rows summed in float64, so the result does not depend on the batch size.
        """
        product = self.product[: a.shape[0]]
        torch.mul(a, b, out=product)
        return self.grid.view2d(product).sum(dim=-1).sum(dim=-1, dtype=torch.float64)


# -- coarse operators ----------------------------------------------------------------


class _StencilOperator:
    """A variable-coefficient 3x3 stencil operator (the Galerkin coarse operators)."""

    def __init__(self, grid: _Grid, stencil: torch.Tensor) -> None:
        self.grid = grid
        lo, hi = grid.lo, grid.hi
        self.centre = grid.flat(stencil[:, 1, 1].unsqueeze(1))
        self.terms = [
            (grid.offset(a - 1, b - 1), grid.flat(stencil[:, a, b].unsqueeze(1))[..., lo:hi])
            for a in range(3)
            for b in range(3)
            if (a, b) != (1, 1)
        ]

    def narrow(self, sl: slice) -> _StencilOperator:
        """The same operator for the samples ``sl`` only (views)."""
        view = object.__new__(_StencilOperator)
        view.grid = self.grid
        view.centre = self.centre[sl]
        view.terms = [(offset, coef[sl]) for offset, coef in self.terms]
        return view

    def residual(self, r: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out = r - A x``."""
        lo, hi = self.grid.lo, self.grid.hi
        torch.addcmul(r, x, self.centre, value=-1.0, out=out)
        target = out[..., lo:hi]
        for offset, coef in self.terms:
            target.addcmul_(x[..., lo + offset : hi + offset], coef, value=-1.0)


def _galerkin_axis(stencil: torch.Tensor, axis: int) -> torch.Tensor:
    """``P_a^T A P_a`` for 1-D bilinear interpolation ``P_a`` along one grid axis.

    ``stencil`` is ``(B, 3, 3, h, w)``; ``axis`` is 3 (rows) or 4 (columns). Row ``I`` of
    the coarse stencil gathers fine rows ``2I - 1 .. 2I + 1`` (those that exist).
    """
    n = stencil.shape[axis]
    nc = coarse_size(n)
    shape = list(stencil.shape)
    shape[axis] = nc
    out = stencil.new_zeros(shape)
    offset_dim = axis - 2  # the stencil dimension of the offsets along this axis
    for e, d, big_d, weight in _GALERKIN_TERMS:
        first = 1 if e < 0 else 0  # coarse I needs fine 2I + e >= 0
        last = (n - 1 - e) // 2  # and 2I + e <= n - 1
        count = last - first + 1
        if count <= 0:
            continue
        source = stencil.select(offset_dim, d + 1).narrow(axis - 1, 2 * first + e, 2 * count - 1)
        target = out.select(offset_dim, big_d + 1).narrow(axis - 1, first, count)
        target.add_(source[(slice(None),) * (axis - 1) + (slice(None, None, 2),)], alpha=weight)
    return out


def galerkin(stencil: torch.Tensor) -> torch.Tensor:
    """``P^T A P`` for bilinear ``P`` (coarse ``J`` on fine ``2J``), one axis at a time."""
    return _galerkin_axis(_galerkin_axis(stencil, 3), 4)


def _jacobi_scale(stencil: torch.Tensor) -> torch.Tensor:
    """Damped inverse diagonal ``omega_i / a_ii`` of a coarse stencil, ``(B, h, w)``.

    Per point: ``omega_i = min(0.8, 1.9 / g_i)`` with ``g_i = sum_j |a_ij| / a_ii``.
    The eigenvalues of ``D_omega A`` are real and positive (it is similar to the SPD
    ``D_omega^1/2 A D_omega^1/2``) and, by Gershgorin on its rows, at most
    ``max_i omega_i g_i <= 1.9``, so each damped Jacobi sweep converges and the V-cycle
    stays positive definite. One ``omega`` per grid, set by the worst point, used to
    throttle the smoothing of every point whenever the masks made one odd coarse point:
    with large patches (31 px cells, 68% removed) CG then took 14-37 iterations instead
    of 5-6, and the multigrid error estimate undershot the error by 10x or more (errors
    up to 1.8e-3 against the required 1e-3).
    """
    diag = stencil[:, 1, 1]
    active = diag > 0
    safe = torch.where(active, diag, torch.ones_like(diag))
    radius = torch.where(active, stencil.abs().sum(dim=(1, 2)) / safe, 1.0)
    omega = torch.clamp(1.9 / radius, max=_COARSE_DAMPING)
    return torch.where(active, omega / safe, 0.0)


def level_smoother(grid: _Grid, stencil: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A coarse level's active-point mask and damped Jacobi scale (:func:`_jacobi_scale`)
    for its ``(B, 3, 3, h, w)`` stencil, both flat ``(B, 1, n)`` (both kernels use them)."""
    mask = (stencil[:, 1, 1] > 0).to(stencil.dtype)
    return grid.flat(mask.unsqueeze(1)), grid.flat(_jacobi_scale(stencil).unsqueeze(1))


@functools.lru_cache(maxsize=32)
def _dense_positions(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``(3, 3, h, w)`` stencil on an ``h x w`` grid: which flat stencil entries
    (``source``) go to which flat ``(n, n)`` matrix entries (``target``), all nine
    offsets at once, couplings across the grid's border left out. Every target occurs
    once (each offset gives its own column offset). Cached: built with bool indexing,
    which reads the mask on the host."""
    n = h * w
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    sources, targets = [], []
    for a in range(3):
        for b in range(3):
            nr, nc = rows + a - 1, cols + b - 1
            ok = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
            sources.append(((a * 3 + b) * n + rows * w + cols)[ok])
            targets.append(((rows * w + cols) * n + nr * w + nc)[ok])
    return torch.cat(sources).to(device), torch.cat(targets).to(device)


def _dense_matrix(stencil: torch.Tensor) -> torch.Tensor:
    """The dense ``(B, n, n)`` float64 matrix of a small stencil operator (one gather and
    one scatter: no host read)."""
    batch, _, _, h, w = stencil.shape
    source, target = _dense_positions(h, w, stencil.device)
    matrix = torch.zeros((batch, h * w, h * w), dtype=torch.float64, device=stencil.device)
    # ``+ 0.0``: an entry is 0 + v, as when summed into the zeros (-0.0 becomes +0.0).
    values = stencil.reshape(batch, -1).index_select(1, source).double() + 0.0
    matrix.view(batch, -1).index_copy_(1, target, values)
    return matrix


def _coarsest_inverse(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of the (regularised) coarsest matrices, ``(B, n, n)`` float64.

    Coarse Galerkin matrices are only positive semi-definite: rows of inactive points
    are zero, and masked interpolation can make active columns linearly dependent (such
    combinations are invisible on the fine grid). Inactive points get a unit diagonal and
    all a relative ``1e-10``, which makes the matrices positive definite without changing
    what the fine grid sees; then a Cholesky inverse. (Any SPD coarsest solve keeps the
    V-cycle SPD.)
    """
    diag = matrix.diagonal(dim1=-2, dim2=-1)
    top = diag.amax(dim=-1, keepdim=True).clamp_min(1e-300)
    boost = torch.where(diag > 0, 1e-10 * top, 1.0)
    factor, info = torch.linalg.cholesky_ex(matrix + torch.diag_embed(boost))
    if bool((info != 0).any()):  # pragma: no cover - guarded by the regularisation
        raise RoadConvergenceError("ROAD solver: coarsest-grid matrix is not positive definite.")
    return torch.cholesky_inverse(factor)


def _dense_solve(inverse: torch.Tensor, grid: _Grid, rhs: torch.Tensor, sol: torch.Tensor) -> None:
    """``sol = inverse rhs`` on a tiny grid (only the interior of ``sol`` is written)."""
    batch, channels = rhs.shape[:2]
    flat = grid.interior(rhs).reshape(batch, channels, -1)
    # In float64, so rounding cannot depend on which matmul kernel the batch picks.
    exact = torch.matmul(flat.double(), inverse)  # the inverse is symmetric
    grid.interior(sol).copy_(exact.view(batch, channels, grid.h, grid.w))


# -- grid transfers ------------------------------------------------------------------


class _Transfers:
    """Scratch for the transfers between a fine grid and the next coarser one.

    The interpolation buffers are zero where :func:`_prolong_add` does not write (the
    first row/column and those past the last coarse point), and stay so.
    """

    def __init__(self, like: torch.Tensor, lead: tuple[int, ...], fine: _Grid, coarse: _Grid):
        self.fine, self.coarse = fine, coarse
        self.restrict_rows = like.new_zeros((*lead, coarse.h, fine.wp))
        self.prolong_rows = like.new_zeros((*lead, fine.hp, coarse.wp))
        self.prolong_full = like.new_zeros((*lead, fine.hp, fine.wp))

    def restrict(self, t: torch.Tensor, out: torch.Tensor) -> None:
        """``out = P^T t`` (full weighting, rows then columns; ``out``'s interior only)."""
        fine, coarse, count = self.fine, self.coarse, t.shape[0]
        hc, wc = coarse.h, coarse.w
        t2d = fine.view2d(t)
        rows = self.restrict_rows[:count]
        torch.add(t2d[..., 1 : 2 * hc : 2, :], t2d[..., 0 : 2 * hc - 1 : 2, :], alpha=0.5, out=rows)
        rows.add_(t2d[..., 2 : 2 * hc + 1 : 2, :], alpha=0.5)
        target = coarse.interior(out)
        torch.add(rows[..., 1 : 2 * wc : 2], rows[..., 0 : 2 * wc - 1 : 2], alpha=0.5, out=target)
        target.add_(rows[..., 2 : 2 * wc + 1 : 2], alpha=0.5)

    def prolong_add(self, source: torch.Tensor, sol: torch.Tensor, mask: torch.Tensor) -> None:
        """``sol += mask * (P source)`` (bilinear interpolation, rows then columns)."""
        coarse, count = self.coarse, sol.shape[0]
        hc, wc = coarse.h, coarse.w
        rows, full = self.prolong_rows[:count], self.prolong_full[:count]
        src = coarse.view2d(source)[..., 1 : hc + 1, :]
        rows[..., 1 : 2 * hc : 2, :].copy_(src)
        torch.lerp(src[..., :-1, :], src[..., 1:, :], 0.5, out=rows[..., 2 : 2 * hc - 1 : 2, :])
        src = rows[..., 1 : wc + 1]
        full[..., 1 : 2 * wc : 2].copy_(src)
        torch.lerp(src[..., :-1], src[..., 1:], 0.5, out=full[..., 2 : 2 * wc - 1 : 2])
        # A ghost coarse point interpolates onto the zero border of ``mask``.
        sol.addcmul_(full.view(sol.shape), mask)


# -- the hierarchy -------------------------------------------------------------------


@dataclass
class _Level:
    """A coarse grid of the hierarchy: operator, smoother and work buffers (all flat)."""

    grid: _Grid
    op: _StencilOperator
    mask: torch.Tensor  # (B, 1, n), 1 on active points
    dinv: torch.Tensor  # (B, 1, n), damped inverse diagonal
    rhs: torch.Tensor  # (B, C, n), this level's right-hand side
    sol: torch.Tensor  # (B, C, n), this level's V-cycle output
    tmp: torch.Tensor  # (B or chunk, C, n), residuals
    transfers: _Transfers | None = None  # to the next coarser level
    chunk_ops: list[_StencilOperator] | None = None  # per chunk, if swept with the fine grid


def fine_chunk_size(unknown: torch.Tensor, channels: int) -> int:
    """Samples per fine-grid sweep: on CPU, few enough for the work to stay in cache."""
    batch = unknown.shape[0]
    if unknown.device.type != "cpu":
        return batch
    grid = _Grid(*unknown.shape[-2:])
    per_sample = _CHUNK_VECTORS * channels * grid.n * unknown.element_size()
    return max(1, min(batch, _CHUNK_BYTES // max(per_sample, 1)))


@dataclass
class Hierarchy:
    """What the V-cycle needs of a batch of masks, shared by all channels (and by the
    torch and the native kernels): the fine operator, the Galerkin coarse stencils and
    the inverse of the coarsest grid's matrix.

    Attributes:
        fine: the fine-grid operator (its ``c1``, ``c2``, ``dinv`` are ``(B, 1, n)``).
        coarse: per coarse level, finest first, its grid and ``(B, 3, 3, h, w)`` stencil;
            empty when the fine grid is itself the coarsest.
        coarsest_inverse: ``(B, m, m)`` float64 inverse on the coarsest grid's ``m``
            interior points (row-major).
    """

    fine: _FineOperator
    coarse: list[tuple[_Grid, torch.Tensor]]
    coarsest_inverse: torch.Tensor

    @staticmethod
    def build(
        unknown: torch.Tensor,
        inside: torch.Tensor | None,
        chunks: list[slice],
        native: bool = False,
    ) -> Hierarchy:
        """The hierarchy of ``unknown`` (``(B, h, w)`` float, 1 at removed pixels);
        ``inside`` as in :class:`MultigridSolver`. The first Galerkin product is formed
        chunk by chunk (the fine stencil is 9 fine-grid fields). With ``native`` (float32
        CPU only) the native kernel forms the products, the same stencils bit for bit."""
        grid = _Grid(*unknown.shape[-2:])
        fine = _FineOperator(grid, unknown, inside)
        coarse: list[tuple[_Grid, torch.Tensor]] = []
        product = galerkin
        if max(grid.h, grid.w) > _COARSEST_SIZE:
            if native:
                from maskbench.inpaint._native import native_galerkin, native_galerkin_first

                stencil = native_galerkin_first(fine)
                product = native_galerkin
            else:
                stencil = torch.cat([galerkin(fine.stencil(sl)) for sl in chunks])
            grid = _Grid(*stencil.shape[-2:])
            coarse.append((grid, stencil))
        else:
            stencil = fine.stencil(slice(0, unknown.shape[0]))
        while max(grid.h, grid.w) > _COARSEST_SIZE:
            stencil = product(stencil)
            grid = _Grid(*stencil.shape[-2:])
            coarse.append((grid, stencil))
        return Hierarchy(fine, coarse, _coarsest_inverse(_dense_matrix(stencil)))


class MultigridSolver:
    """Solves ``A x = 12 b`` for a batch of masks, several right-hand sides (channels) each.

    The setup (stencils, Galerkin products, coarsest inverse) depends only on the masks
    and is shared by the channels. Each iteration does the work of the fine grid and the
    first coarse grid in two sweeps over chunks of samples (on the CPU, chunks small
    enough to stay in cache): CG step, true residual and pre-smoothing; then
    interpolation, post-smoothing, convergence check and new direction. The coarser grids
    work on the whole batch at once in between.
    """

    def __init__(
        self, unknown: torch.Tensor, channels: int, inside: torch.Tensor | None = None
    ) -> None:
        """``unknown``: ``(B, h, w)`` float, 1 at removed pixels, else 0. ``inside``: the
        same shape, 1 where a pixel exists (None: everywhere); others count as outside
        the image (no neighbour)."""
        batch = unknown.shape[0]
        self.channels = channels
        self.grid = _Grid(*unknown.shape[-2:])
        chunk = fine_chunk_size(unknown, channels)
        self.chunks = _chunks(batch, chunk)
        hierarchy = Hierarchy.build(unknown, inside, self.chunks)
        self.fine = hierarchy.fine
        self.work = _FineWork(unknown, chunk, channels, self.grid)
        self.levels = [self._make_level(grid, stencil) for grid, stencil in hierarchy.coarse]
        self.coarsest_inverse = hierarchy.coarsest_inverse
        self.fine_transfers = None
        if self.levels:
            first = self.levels[0].grid
            self.fine_transfers = _Transfers(unknown, (chunk, channels), self.grid, first)
        # The first coarse level is swept with the fine grid, chunk by chunk, unless it is
        # the coarsest; the levels below work on the whole batch.
        self.swept = 1 if len(self.levels) > 1 else 0
        for k, (level, coarser) in enumerate(zip(self.levels[:-1], self.levels[1:], strict=True)):
            lead = (chunk if k < self.swept else batch, channels)
            level.transfers = _Transfers(unknown, lead, level.grid, coarser.grid)
            if k < self.swept:
                level.chunk_ops = [level.op.narrow(sl) for sl in self.chunks]
                level.tmp = unknown.new_zeros((chunk, channels, level.grid.n))

    def _make_level(self, grid: _Grid, stencil: torch.Tensor) -> _Level:
        mask, dinv = level_smoother(grid, stencil)
        shape = (mask.shape[0], self.channels, grid.n)
        return _Level(
            grid=grid,
            op=_StencilOperator(grid, stencil),
            mask=mask,
            dinv=dinv,
            rhs=mask.new_zeros(shape),
            sol=mask.new_zeros(shape),
            tmp=mask.new_zeros(shape),
        )

    # -- V-cycle -------------------------------------------------------------------

    def _coarse_vcycle(self, k: int) -> None:
        """``levels[k].sol = B_k levels[k].rhs``: one symmetric V-cycle, whole batch."""
        level = self.levels[k]
        if level.transfers is None:
            _dense_solve(self.coarsest_inverse, level.grid, level.rhs, level.sol)
            return
        coarser = self.levels[k + 1]
        torch.mul(level.rhs, level.dinv, out=level.sol)
        level.op.residual(level.rhs, level.sol, level.tmp)
        level.transfers.restrict(level.tmp, coarser.rhs)
        self._coarse_vcycle(k + 1)
        level.transfers.prolong_add(coarser.sol, level.sol, level.mask)
        level.op.residual(level.rhs, level.sol, level.tmp)
        level.sol.addcmul_(level.tmp, level.dinv)

    def _pre_smooth(self, i: int, r: torch.Tensor, z: torch.Tensor) -> None:
        """First half of the V-cycle on the swept grids for chunk ``i``: smooth, restrict."""
        if self.fine_transfers is None:
            return
        sl = self.chunks[i]
        tmp = self.work.tmp[: r.shape[0]]
        torch.mul(r, self.fine.dinv[sl], out=z)
        self.fine.residual(sl, r, z, tmp, self.work)
        self.fine_transfers.restrict(tmp, self.levels[0].rhs[sl])
        for k in range(self.swept):
            level, coarser = self.levels[k], self.levels[k + 1]
            assert level.transfers is not None and level.chunk_ops is not None
            rhs, sol, tmp = level.rhs[sl], level.sol[sl], level.tmp[: r.shape[0]]
            torch.mul(rhs, level.dinv[sl], out=sol)
            level.chunk_ops[i].residual(rhs, sol, tmp)
            level.transfers.restrict(tmp, coarser.rhs[sl])

    def _post_smooth(self, i: int, r: torch.Tensor, z: torch.Tensor) -> None:
        """Second half of the V-cycle on the swept grids for chunk ``i``: interpolate,
        smooth again."""
        sl = self.chunks[i]
        if self.fine_transfers is None:
            _dense_solve(self.coarsest_inverse[sl], self.grid, r, z)
            return
        for k in reversed(range(self.swept)):
            level, coarser = self.levels[k], self.levels[k + 1]
            assert level.transfers is not None and level.chunk_ops is not None
            rhs, sol, tmp = level.rhs[sl], level.sol[sl], level.tmp[: r.shape[0]]
            level.transfers.prolong_add(coarser.sol[sl], sol, level.mask[sl])
            level.chunk_ops[i].residual(rhs, sol, tmp)
            sol.addcmul_(tmp, level.dinv[sl])
        tmp = self.work.tmp[: r.shape[0]]
        self.fine_transfers.prolong_add(self.levels[0].sol[sl], z, self.fine.c2[sl])
        self.fine.residual(sl, r, z, tmp, self.work)
        z.addcmul_(tmp, self.fine.dinv[sl])

    def _coarse_part(self) -> None:
        """The batched middle of the V-cycle (nothing on a grid that is itself coarsest)."""
        if self.levels:
            self._coarse_vcycle(self.swept)

    def precondition(self, r: torch.Tensor, z: torch.Tensor) -> None:
        """``z = B r`` for flat fine-grid ``r`` (one V-cycle)."""
        for i, sl in enumerate(self.chunks):
            self._pre_smooth(i, r[sl], z[sl])
        self._coarse_part()
        for i, sl in enumerate(self.chunks):
            self._post_smooth(i, r[sl], z[sl])

    # -- conjugate gradients -------------------------------------------------------

    def solve(
        self,
        b: torch.Tensor,
        scale: torch.Tensor,
        *,
        tol: float,
        max_iter: int,
        pool: BufferPool | None = None,
    ) -> tuple[torch.Tensor, SolveInfo]:
        """Solve ``A x = b`` for flat ``b`` of shape ``(B, C, n)`` by preconditioned CG.

        ``pool`` (optional) lends the CG vectors, ``x`` included: the returned ``x`` is
        then valid until the pool's next release.

        Stopping rule, per (sample, channel): ``z = B (b - A x)``, the multigrid estimate
        of the remaining error, has ``max |z| <= tol * scale`` (``scale``: ``(B, C)``, the
        largest kept ``|value|``, which bounds ``|x|`` by the maximum principle). Unlike a
        relative residual this measures the error where it sits (a smooth error in a
        large hole has a tiny residual). The residual is recomputed as ``b - A x`` every
        iteration, so the check is never fooled by drift; a system that passes gets
        ``x + z`` (one more V-cycle's correction) and is frozen. Systems with
        ``scale = 0`` have ``x = 0``.

        Float32 systems evaluate the residual in float32, except (a) all of them when
        ``tol`` is below 3e-5, and (b) from then on, a sample one of whose systems
        *stagnates*: its estimate fails to drop below half its best earlier one. In
        float32 that happens when the residual's round-off, amplified by ``B`` (about
        ``A^-1``), is itself above ``tol`` -- tiny kept regions far from most of the
        removed pixels, e.g. one kept pixel in a corner of a 160 x 160 or larger image
        (see the module docstring). The float64 residual removes that floor; the
        preconditioner is unchanged. The switch is per sample and depends only on the
        sample's own estimates, so batching stays exact. A stagnating system also
        restarts its conjugate-gradient direction (``beta = 0``): CG driven by a
        residual that is mostly round-off loses conjugacy and, left alone, diverges
        geometrically (that was the "broke down (non-finite residual)" failure). If
        even the float64 residual (or, for float64 systems, the float64 round-off)
        cannot reach ``tol``, the restarts keep the iterate bounded until
        ``max_iter`` and the solve raises.

        Raises :class:`RoadConvergenceError` if some system has not converged after
        ``max_iter`` iterations, or the iteration broke down (non-finite values).
        """
        state = _CGState(b, scale, tol, self.chunks, pool)
        self.precondition(b, state.z)  # r = b at x = 0
        for i in range(len(self.chunks)):
            state.check(i, self.work)
        while not state.settle():  # the iteration's one host read
            if state.iterations >= max_iter:
                state.raise_unconverged(max_iter)
            state.iterations += 1
            for i in range(len(self.chunks)):  # CG step, true residual, pre-smoothing
                self._step(i, state)
            self._coarse_part()
            for i in range(len(self.chunks)):  # post-smoothing, check, new direction
                view = state.views[i]
                self._post_smooth(i, view.r, view.z)
                state.check(i, self.work)
        return state.x, state.info(len(self.levels) + 1)

    def _step(self, i: int, state: _CGState) -> None:
        """``x += alpha p`` on chunk ``i``, then ``r = b - A x`` and pre-smoothing."""
        sl, view = self.chunks[i], state.views[i]
        ap = self.work.ap[: view.x.shape[0]]
        self.fine.apply(sl, view.p, ap, self.work)
        view.x.addcmul_(view.p, state.alpha(i, self.work.dot(view.p, ap)).to(view.x.dtype))
        accurate = state.accurate_rows[i]
        if accurate is _ALL:
            self.fine.accurate_residual(sl, view.b, view.x, view.r, self.work)
        else:
            self.fine.residual(sl, view.b, view.x, view.r, self.work)
            if state.iterations == 1 and state.can_switch:  # measure who must switch
                self._probe_round_off(i, state)
            elif accurate is not None:  # the samples switched to a float64 residual
                self.fine.accurate_residual(sl, view.b, view.x, view.r, self.work, accurate)
        self._pre_smooth(i, view.r, view.z)

    def _probe_round_off(self, i: int, state: _CGState) -> None:
        """First CG step, float32 chunk ``i`` holding its float32 residual: measure its
        round-off against a float64 evaluation, and switch the samples whose round-off
        floor is not well below ``tol`` (see :meth:`_round_off_floor`)."""
        sl, view = self.chunks[i], state.views[i]
        exact = self.fine.residual64(sl, view.b, view.x, self.work)
        round_off = self.work.tmp[: view.r.shape[0]]  # free until pre-smoothing
        torch.sub(view.r, exact, out=round_off)
        floor = self._round_off_floor(sl, round_off)
        state.switch(i, (floor > _FLOOR_FRACTION * state.threshold[i]).any(dim=1))

    def _round_off_floor(self, sl: slice, round_off: torch.Tensor) -> torch.Tensor:
        """``(k, C)`` estimate of ``max |B e|`` for the residual round-off ``e`` (flat)
        of samples ``sl``: float32 error estimates below it are noise.

        ``B`` amplifies round-off through its coarse-grid correction: the restriction of
        ``e`` to the coarsest grid times the (exact) coarsest inverse, which is where the
        near-singular modes of a weakly anchored system live (measured: within a few
        percent of ``max |B e|`` whenever the floor is above 1e-5). The smoothers add at
        most about ``max |e| / 2`` (``0.8 / 12 s_i`` per sweep, ``12 s_i >= 5``): counted.
        Uses the first coarse level's ``rhs`` as scratch (pre-smoothing rewrites it).
        """
        if self.fine_transfers is None:  # the fine grid is the coarsest
            coarse = self.grid.interior(round_off)
        else:
            first = self.levels[0]
            self.fine_transfers.restrict(round_off, first.rhs[sl])
            coarse = first.grid.interior(first.rhs[sl])
        while max(coarse.shape[-2:]) > _COARSEST_SIZE:
            coarse = _restrict2d(coarse)
        flat = coarse.reshape(*coarse.shape[:2], -1).double()
        # Row sums (not matmul): per sample, the same arithmetic in any batch.
        error = (flat.unsqueeze(-2) * self.coarsest_inverse[sl].unsqueeze(1)).sum(dim=-1)
        return _max_abs(error) + 0.5 * _max_abs(round_off).double()


_ALL = slice(None)  # _CGState.accurate_rows: every sample of the chunk


@dataclass
class _ChunkView:
    """The CG vectors of one chunk of samples (views)."""

    b: torch.Tensor
    x: torch.Tensor
    r: torch.Tensor
    z: torch.Tensor
    p: torch.Tensor


class _CGState:
    """Vectors and per-system scalars of the batched conjugate-gradient iteration.

    Scalars are kept per chunk (``(k, C)`` tensors), so a sweep never slices the batch.
    :meth:`check` reads nothing back to the host; :meth:`settle`, once per iteration,
    reads everything the host decides on in one go.
    """

    def __init__(
        self,
        b: torch.Tensor,
        scale: torch.Tensor,
        tol: float,
        chunks: list[slice],
        pool: BufferPool | None = None,
    ):
        take = pool.take if pool is not None else torch.empty_like
        self.x = take(b).zero_()
        self.r = b  # x = 0; the first CG step writes a fresh residual into ``r_buffer``
        self.r_buffer = take(b)
        self.z = take(b).zero_()  # a dense coarsest solve writes only the interior
        self.p = take(b)
        self.views = [
            _ChunkView(b[sl], self.x[sl], self.r_buffer[sl], self.z[sl], self.p[sl])
            for sl in chunks
        ]
        self.first_views = [
            _ChunkView(b[sl], self.x[sl], b[sl], self.z[sl], self.p[sl]) for sl in chunks
        ]
        self.tol = tol
        self.scale = [scale[sl] for sl in chunks]
        self.threshold = [tol * scale[sl] for sl in chunks]
        self.done = [scale[sl] == 0 for sl in chunks]  # b = 0: x = 0 is exact
        self.rz = [torch.zeros(s.shape, dtype=torch.float64, device=b.device) for s in self.scale]
        self.estimate = [torch.zeros_like(s) for s in self.scale]
        self.worst = [torch.zeros_like(s) for s in self.scale]
        self.best = [torch.full_like(s, float("inf")) for s in self.scale]
        self.iterations = 0
        self.restarts = torch.zeros((), dtype=torch.int64, device=b.device)
        # Per chunk, the samples with a system that stalled since the last settle.
        self.stalled_samples = [torch.zeros_like(d[:, 0]) for d in self.done]
        # Which samples evaluate the residual in float64 (see MultigridSolver.solve):
        # per chunk a (k,) mask, and for _step None (none), _ALL, or their positions.
        self.can_switch = b.dtype != torch.float64
        everyone = self.can_switch and tol < _FLOAT32_SAFE_TOL
        self.accurate = [
            torch.full(s.shape[:1], everyone or not self.can_switch, device=b.device)
            for s in self.scale
        ]
        self.accurate_rows: list[torch.Tensor | slice | None] = [
            _ALL if everyone else None for _ in chunks
        ]

    def check(self, i: int, work: _FineWork) -> None:
        """After ``z = B r`` on chunk ``i``: freeze the systems that pass (adding the
        correction ``z``), switch and restart those that stagnate, and set the next
        search direction of the others."""
        view = self.first_views[i] if self.iterations == 0 else self.views[i]
        estimate = _max_abs(view.z)
        self.worst[i] = estimate
        passed = (estimate <= self.threshold[i]) & ~self.done[i]
        # Unconditional (no host read): systems that did not pass add 0 times z, which
        # leaves x bit for bit (x is never -0.0), or NaN where z is not finite, and
        # then settle() raises.
        view.x.addcmul_(view.z, passed.to(view.z.dtype).unsqueeze(-1))
        self.estimate[i] = torch.where(passed, estimate, self.estimate[i])
        self.done[i] = self.done[i] | passed
        # Root cause of the corner failures: with a float32 residual, a system whose
        # round-off floor (residual round-off amplified by B ~ A^-1) is above tol can
        # never pass; CG then runs on round-off, loses conjugacy and diverges. Detect
        # the stagnation, move the sample to a float64 residual, restart CG (beta = 0).
        stalled = (estimate > _STALL_RATIO * self.best[i]) & ~self.done[i]
        self.best[i] = torch.minimum(self.best[i], estimate)
        self.restarts += stalled.sum()
        self.stalled_samples[i] = self.stalled_samples[i] | stalled.any(dim=1)
        rz_new = work.dot(view.r, view.z)
        if self.iterations == 0:
            view.p.copy_(view.z)
        else:
            # Done systems get beta = 0 (their direction is never used again), and so
            # do stalled ones (a restart: p = z).
            active = (~(self.done[i] | stalled)).to(rz_new.dtype)
            beta = (rz_new / self.rz[i].clamp_min(1e-300) * active).to(view.p.dtype)
            torch.addcmul(view.z, view.p, beta.unsqueeze(-1), out=view.p)
        self.rz[i] = rz_new

    def settle(self) -> bool:
        """After the checks of an iteration: whether every system is done, in one host
        read. Raises :class:`RoadConvergenceError` if the iteration broke down (a
        non-finite estimate); moves the samples whose systems stalled to a float64
        residual (see :meth:`switch`) before the next step."""
        flags = torch.stack(
            [
                torch.stack([done.all(), torch.isfinite(worst).all(), stalled.any()])
                for done, worst, stalled in zip(
                    self.done, self.worst, self.stalled_samples, strict=True
                )
            ]
        ).tolist()
        if not all(finite for _, finite, _ in flags):
            raise RoadConvergenceError("ROAD solver broke down (non-finite residual).")
        for i, (_, _, stalled) in enumerate(flags):
            if stalled:
                self.switch(i, self.stalled_samples[i])
                self.stalled_samples[i] = torch.zeros_like(self.stalled_samples[i])
        return all(done for done, _, _ in flags)

    def switch(self, i: int, samples: torch.Tensor) -> None:
        """Evaluate the residual of ``samples`` (``(k,)`` bool) of chunk ``i`` in
        float64 from the next CG step on (no-op for float64 systems)."""
        switch = samples & ~self.accurate[i]
        if not (self.can_switch and bool(switch.any())):
            return
        self.accurate[i] = self.accurate[i] | switch
        if bool(self.accurate[i].all()):
            self.accurate_rows[i] = _ALL
        else:
            self.accurate_rows[i] = torch.nonzero(self.accurate[i]).flatten()

    def alpha(self, i: int, pap: torch.Tensor) -> torch.Tensor:
        """Step lengths of chunk ``i`` (zero for systems that are done)."""
        active = (~self.done[i]).to(pap.dtype)
        return (self.rz[i] / pap.clamp_min(1e-300) * active).unsqueeze(-1)

    def raise_unconverged(self, max_iter: int) -> None:
        done, worst, scale = torch.cat(self.done), torch.cat(self.worst), torch.cat(self.scale)
        raise RoadConvergenceError(unconverged_message(max_iter, self.tol, done, worst, scale))

    def info(self, levels: int) -> SolveInfo:
        scale, estimate = torch.cat(self.scale), torch.cat(self.estimate)
        relative = torch.where(scale > 0, estimate / scale.clamp_min(1e-300), 0.0)
        return SolveInfo(
            iterations=self.iterations,
            error_estimate=relative,
            levels=levels,
            float64_residual=torch.cat(self.accurate),
            restarts=int(self.restarts),
        )


def unconverged_message(
    max_iter: int, tol: float, done: torch.Tensor, worst: torch.Tensor, scale: torch.Tensor
) -> str:
    """What :class:`RoadConvergenceError` says when systems are left unconverged:
    ``done``, ``worst`` (last error estimates) and ``scale`` are per system."""
    relative = float((torch.where(done, 0.0, worst) / scale.clamp_min(1e-300)).max())
    return (
        f"ROAD solver did not converge in {max_iter} iterations: worst relative error "
        f"estimate {relative:.3e} > tol {tol:.1e} ({int((~done).sum())} of "
        f"{done.numel()} (sample, channel) systems)."
    )


def _restrict2d(t: torch.Tensor) -> torch.Tensor:
    """``P^T t`` for ``(..., h, w)`` ``t``: the restriction of :class:`_Transfers` on
    unpadded grids (elementwise, so per sample the same in any batch)."""
    h, w = t.shape[-2:]
    hc, wc = coarse_size(h), coarse_size(w)
    # Pad to 2 hc + 1 rows: coarse I gathers padded rows 2I, 2I + 1, 2I + 2.
    t = torch.nn.functional.pad(t, (1, 2 * wc - w, 1, 2 * hc - h))
    rows = t[..., 1 : 2 * hc : 2, :] + 0.5 * (t[..., 0 : 2 * hc : 2, :] + t[..., 2::2, :])
    return rows[..., 1 : 2 * wc : 2] + 0.5 * (rows[..., 0 : 2 * wc : 2] + rows[..., 2::2])


def _max_abs(a: torch.Tensor) -> torch.Tensor:
    """Per (sample, channel) max-norm over the last axis (exact, order-free)."""
    return torch.maximum(a.amax(dim=-1), -a.amin(dim=-1))


Kernels = Literal["auto", "native", "torch"]


def uses_native_kernel(kernels: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``kernels`` means the native kernel for a system solved in ``dtype`` on
    ``device`` (it solves float32 on the CPU; ``"auto"`` takes it there).

    Raises:
        ValueError: an unknown ``kernels``, or ``"native"`` where it cannot run.
    """
    if kernels not in ("auto", "native", "torch"):
        raise ValueError(f"kernels must be 'auto', 'native' or 'torch', got {kernels!r}")
    supported = device.type == "cpu" and dtype == torch.float32
    if kernels == "native" and not supported:
        raise ValueError(
            f"kernels='native' solves on the CPU in float32; this system is solved in "
            f"{dtype} on {device.type} (use kernels='auto' or 'torch')"
        )
    return kernels != "torch" and supported


def solve_system(
    values: torch.Tensor,
    unknown: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    inside: torch.Tensor | None = None,
    pool: BufferPool | None = None,
    kernels: Kernels = "auto",
) -> tuple[torch.Tensor, SolveInfo]:
    """Solve ROAD's system for every image and channel.

    Args:
        values: ``(B, C, h, w)`` images in the compute dtype (values at unknown pixels
            are ignored, even NaN).
        unknown: ``(B, h, w)`` bool, True at removed pixels.
        tol: error tolerance relative to the largest kept ``|value|`` of each image and
            channel (see :meth:`MultigridSolver.solve`).
        max_iter: cap on conjugate-gradient iterations.
        inside: optional ``(B, h, w)`` bool, True where a pixel exists; pixels outside
            count as beyond the image border (they are no one's neighbour). Default: all.
        pool: optional :class:`~maskbench.inpaint._buffers.BufferPool` that lends the
            CG vectors (no fresh memory, hence no page faults, on repeated calls).
        kernels: ``"native"``: the compiled CPU kernel (:mod:`._native`; float32 CPU
            images only); ``"torch"``: torch operations (any device and dtype);
            ``"auto"``: native where it applies, else torch. A missing native library is
            an error under ``"auto"`` too (:class:`~._native.NativeKernelsMissingError`),
            not a silent slow path.

    Returns:
        ``(x, info)``: ``x`` is ``(B, C, h, w)``, the solution at unknown pixels and 0
        elsewhere (a view into a padded buffer; with a ``pool``, valid until its next
        release).
    """
    native = uses_native_kernel(kernels, values.device, values.dtype)
    dtype = values.dtype
    unknown_f = unknown.to(dtype)
    inside_f = None if inside is None else inside.to(dtype)
    if native:
        return _solve_native(values, unknown_f, inside_f, tol, max_iter, pool)
    batch, channels = values.shape[:2]
    solver = MultigridSolver(unknown_f, channels, inside_f)
    rhs = values.new_empty((batch, channels, solver.grid.n))
    scale = values.new_empty((batch, channels))
    for sl in solver.chunks:
        known = torch.where(unknown[sl].unsqueeze(1), 0.0, values[sl])
        rhs[sl] = solver.fine.rhs(sl, known, solver.work)
        scale[sl] = _max_abs(known.flatten(-2))
    x, info = solver.solve(rhs, scale, tol=tol, max_iter=max_iter, pool=pool)
    return solver.grid.interior(x), info


def _solve_native(
    values: torch.Tensor,
    unknown_f: torch.Tensor,
    inside_f: torch.Tensor | None,
    tol: float,
    max_iter: int,
    pool: BufferPool | None,
) -> tuple[torch.Tensor, SolveInfo]:
    """:func:`solve_system` with the native kernel (same hierarchy and right-hand side
    as the torch kernels)."""
    from maskbench.inpaint._native import native_solve

    channels = values.shape[1]
    chunks = _chunks(values.shape[0], fine_chunk_size(unknown_f, channels))
    hierarchy = Hierarchy.build(unknown_f, inside_f, chunks, native=True)
    grid = hierarchy.fine.grid
    shape = (*values.shape[:2], grid.n)
    x = (
        pool.empty(shape, values.dtype, values.device)
        if pool is not None
        else values.new_empty(shape)
    )
    info = native_solve(hierarchy, values, x, tol=tol, max_iter=max_iter)
    return grid.interior(x), info
