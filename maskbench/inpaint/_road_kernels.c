/*
 * Native CPU kernel of maskbench's ROAD solver: multigrid-preconditioned conjugate
 * gradients, one (sample, channel) system at a time, all of its passes in cache.
 *
 * Python (maskbench/inpaint/_native.py) builds the multigrid hierarchy with torch (the
 * fine operator's coefficients, the Galerkin coarse stencils and the dense inverse of the
 * coarsest grid, see _multigrid.py) and calls `road_pcg` once per solve. This file only
 * runs the iteration. It mirrors MultigridSolver.solve in _multigrid.py operation by
 * operation (same V-cycle, same stopping rule, same restarts) with two differences:
 *
 *   - the conjugate-gradient residual b - A x is always evaluated in double precision
 *     (the torch solver does so for the samples whose float32 round-off floor is too
 *     high; here it costs next to nothing, so there is no probe and no switch);
 *   - dot products are accumulated in double in one pass (torch: float32 row sums, then
 *     double), so iterates agree with the torch solver to round-off, not bit for bit.
 *
 * Layout (see _Grid in _multigrid.py): a vector of an h x w grid is stored padded to
 * hp x wp = (2 (h/2 + 1) + 1) x (2 (w/2 + 1) + 1), point (i, j) at (i + 1) wp + j + 1,
 * zero on the padding. Neighbour (dy, dx) is flat offset dy * wp + dx.
 *
 * Each system is computed by the same code whatever the batch or the thread count, so a
 * sample's result does not depend on the other samples (bit for bit).
 *
 * Compiled with -ffp-contract=off: no fused multiply-adds, so each operation rounds as
 * written (and as torch's elementwise kernels do).
 */
#include <math.h>
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROAD_MAX_LEVELS 32

/*
 * The hot loops are compiled twice, for AVX2 and for baseline x86-64, and the loader
 * picks the one the CPU supports (GCC function multi-versioning). Without FMA
 * contraction both round identically. Other compilers and architectures: one version.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ROAD_HOT __attribute__((target_clones("avx2", "default")))
#else
#define ROAD_HOT
#endif

enum { ROAD_CONVERGED = 0, ROAD_UNCONVERGED = 1, ROAD_BROKEN = 2, ROAD_NO_MEMORY = 3 };

/* One grid: interior h x w, padded hp x wp, flat length n. */
typedef struct {
    int64_t h, w, hp, wp, n;
} road_grid;

/*
 * The problem, filled in by _native.py (field order and types must match its
 * ctypes.Structure). Level 0 is the fine grid, levels 1..levels are the coarse ones;
 * the last one is solved densely. With levels == 0 the fine grid itself is solved
 * densely.
 */
typedef struct {
    int64_t batch, channels, levels, threads, max_iter;
    double tol;
    const int64_t *dims;  /* (levels + 1) x 2: h, w of each grid */
    const float *c1;      /* (batch, n0): 12 s on unknowns, see _FineOperator */
    const float *c2;      /* (batch, n0): 1 on unknowns, else 0 */
    const float *dinv;    /* (batch, n0): damped inverse diagonal of the fine grid */
    const float *const *coef;  /* per coarse level k (index k - 1): (batch, 9, n_k) */
    const float *const *mask;  /* per coarse level: (batch, n_k), 1 on active points */
    const float *const *cdinv; /* per coarse level: (batch, n_k) */
    const double *inverse;     /* (batch, m, m), m = h * w of the coarsest grid */
    const float *values;       /* (batch, channels, h0, w0): the images (any value where
                                  c2 = 1: never read into arithmetic) */
    float *scale;              /* (batch, channels), written: largest kept |value| */
    float *x;                  /* (batch, channels, n0): solution (written) */
    /* per system (batch x channels), written: */
    int64_t *iterations;
    int64_t *restarts;
    int64_t *status;
    float *estimate; /* error estimate when it passed */
    float *worst;    /* last error estimate */
} road_problem;

static road_grid make_grid(int64_t h, int64_t w) {
    road_grid g;
    g.h = h;
    g.w = w;
    g.hp = 2 * (h / 2 + 1) + 1;
    g.wp = 2 * (w / 2 + 1) + 1;
    g.n = g.hp * g.wp;
    return g;
}

/* Per-thread scratch: fine vectors and, per coarse level, rhs / sol / tmp (pointers into
 * one block, see carve_scratch). */
typedef struct {
    float *r, *z, *p, *tmp, *b;
    float *rhs[ROAD_MAX_LEVELS + 1], *sol[ROAD_MAX_LEVELS + 1], *ctmp[ROAD_MAX_LEVELS + 1];
    float *line;  /* transfer lines: 2 wp + 4 floats */
    float *ring;  /* three row-filtered fine rows and a spare line: 4 wp floats */
    double *ringd; /* the same in double */
    double *dense_in, *dense_out;
} road_scratch;

/*
 * Double sums are accumulated in 8 independent lanes (element i goes to lane i % 8 of
 * its run), combined in a fixed order at the end. The lanes are GCC vector types, so the
 * sums vectorise on any x86-64 while their rounding is fixed by the code: the same on
 * every machine, for every batch.
 */
#define ROAD_LANES 8
typedef float road_v4f __attribute__((vector_size(16)));
typedef double road_v4d __attribute__((vector_size(32)));
typedef float road_v8f __attribute__((vector_size(32)));
typedef int32_t road_v8i __attribute__((vector_size(32)));

typedef struct {
    road_v4d lo, hi; /* lanes 0-3 and 4-7 */
} road_sum;

static inline void sum_init(road_sum *sum) {
    sum->lo = (road_v4d){0.0, 0.0, 0.0, 0.0};
    sum->hi = sum->lo;
}

/* sum += a . b over n entries (lane of a[i]: i % 8). */
static inline void sum_dot(road_sum *sum, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + ROAD_LANES <= n; i += ROAD_LANES) {
        road_v4f a0, a1, b0, b1;
        memcpy(&a0, a + i, sizeof a0);
        memcpy(&a1, a + i + 4, sizeof a1);
        memcpy(&b0, b + i, sizeof b0);
        memcpy(&b1, b + i + 4, sizeof b1);
        sum->lo += __builtin_convertvector(a0, road_v4d) * __builtin_convertvector(b0, road_v4d);
        sum->hi += __builtin_convertvector(a1, road_v4d) * __builtin_convertvector(b1, road_v4d);
    }
    for (int k = 0; i < n; i++, k++) {
        const double v = (double)a[i] * (double)b[i];
        if (k < 4)
            sum->lo[k] += v;
        else
            sum->hi[k - 4] += v;
    }
}

static inline double sum_result(const road_sum *sum) {
    double total = 0.0;
    for (int k = 0; k < 4; k++) total += sum->lo[k];
    for (int k = 0; k < 4; k++) total += sum->hi[k];
    return total;
}

/* top = max(top, |a|) over n entries; NaN entries are skipped, but a NaN or infinite
 * entry sets its lane of `bad` (all bits). */
static inline void max_abs_into(road_v8f *top, road_v8i *bad, const float *a, int64_t n) {
    const road_v8i magnitude = (road_v8i){0, 0, 0, 0, 0, 0, 0, 0} + 0x7fffffff;
    const road_v8f infinity = (road_v8f){0, 0, 0, 0, 0, 0, 0, 0} + INFINITY;
    int64_t i = 0;
    for (; i + ROAD_LANES <= n; i += ROAD_LANES) {
        road_v8f v;
        memcpy(&v, a + i, sizeof v);
        v = (road_v8f)((road_v8i)v & magnitude);
        road_v8i bigger = v > *top;
        *top = (road_v8f)(((road_v8i)v & bigger) | ((road_v8i)*top & ~bigger));
        *bad |= (v != v) | (v == infinity);
    }
    for (int k = 0; i < n; i++, k++) {
        const float v = fabsf(a[i]);
        if (v > (*top)[k]) (*top)[k] = v;
        if (!isfinite(v)) (*bad)[k] = -1;
    }
}

/* ---- fine operator: A = 12 M = c1 x - c2 (K x), K = (1 2 1) x (1 2 1) ---------- */

/*
 * K x is separable: row-filtered values f[i] = (x[i-1] + x[i+1]) + 2 x[i] (as
 * _filter_121 rounds them), then (f[i-wp] + f[i+wp]) + 2 f[i]. The passes below walk the
 * grid row by row and keep the row-filtered values of three grid rows in a ring of lines
 * (3 x wp entries), so each is computed once; a pointwise update of the filtered vector
 * (x += alpha p, p = z + beta p, z = D r) is fused in one row ahead of the filter. Only
 * columns 1 .. wp-2 are filtered: columns 0 and wp-1 are padding, where c2 = 0 and K x
 * does not enter. Rows 0 and hp-1 are padding too; every vector is zero there.
 */
#define ROAD_FILTER_LINE(T, line, x)                                                      \
    for (int64_t X = 1; X < wp - 1; X++)                                                  \
        (line)[X] = ((T)(x)[X - 1] + (T)(x)[X + 1]) + (T)2 * (T)(x)[X];

/* The three ring lines, rotated after each grid row. */
#define ROAD_RING(T, ring)                                                                \
    T *up = (ring), *mid = (ring) + wp, *down = (ring) + 2 * wp, *spare_;                 \
    for (int64_t X = 0; X < wp; X++) up[X] = (T)0; /* row 0: padding, x = 0 */
#define ROAD_ROTATE() (spare_ = up, up = mid, mid = down, down = spare_)

/* p . (A p) in double (A p rounded to float first, as torch does), after setting the
 * search direction p = z (fresh) or p = z + beta p, row by row. `ring` has 4 lines. */
ROAD_HOT static double fine_energy_direction(const road_grid *g, const float *restrict c1,
                                             const float *restrict c2, const float *restrict z,
                                             float *restrict p, float beta, int fresh,
                                             float *ring) {
    const int64_t wp = g->wp, hp = g->hp;
    float *ap = ring + 3 * wp;
    road_sum sum;
    sum_init(&sum);
#define ROAD_DIRECTION_ROW(Y)                                                             \
    do {                                                                                  \
        float *pr = p + (Y) * wp;                                                         \
        const float *zr = z + (Y) * wp;                                                   \
        if (fresh)                                                                        \
            for (int64_t X = 0; X < wp; X++) pr[X] = zr[X];                               \
        else                                                                              \
            for (int64_t X = 0; X < wp; X++) pr[X] = zr[X] + pr[X] * beta;                \
    } while (0)
    ROAD_DIRECTION_ROW(0);
    ROAD_DIRECTION_ROW(1);
    ROAD_RING(float, ring)
    ROAD_FILTER_LINE(float, mid, p + wp)
    for (int64_t Y = 1; Y < hp - 1; Y++) {
        const int64_t row = Y * wp;
        ROAD_DIRECTION_ROW(Y + 1);
        ROAD_FILTER_LINE(float, down, p + row + wp)
        const float *pp = p + row, *a = c1 + row, *b = c2 + row;
        for (int64_t X = 1; X < wp - 1; X++) {
            float f = (up[X] + down[X]) + 2.0f * mid[X];
            ap[X] = pp[X] * a[X] - f * b[X];
        }
        sum_dot(&sum, pp + 1, ap + 1, wp - 2); /* p is zero on the padding */
        ROAD_ROTATE();
    }
#undef ROAD_DIRECTION_ROW
    return sum_result(&sum);
}

/* x += alpha p, then r = b - A x evaluated in double and rounded to float (the CG
 * residual; see the file comment), row by row. */
ROAD_HOT static void fine_step_residual(const road_grid *g, const float *restrict c1,
                                        const float *restrict c2, const float *restrict b,
                                        float *restrict x, const float *restrict p,
                                        float alpha, float *restrict r, double *ring) {
    const int64_t wp = g->wp, hp = g->hp;
#define ROAD_STEP_ROW(Y)                                                                  \
    do {                                                                                  \
        float *xr = x + (Y) * wp;                                                         \
        const float *pr = p + (Y) * wp;                                                   \
        for (int64_t X = 0; X < wp; X++) xr[X] = xr[X] + pr[X] * alpha;                   \
    } while (0)
    ROAD_STEP_ROW(0);
    ROAD_STEP_ROW(1);
    ROAD_RING(double, ring)
    ROAD_FILTER_LINE(double, mid, x + wp)
    for (int64_t X = 0; X < wp; X++) r[X] = (float)((double)b[X] - (double)c1[X] * x[X]);
    for (int64_t Y = 1; Y < hp - 1; Y++) {
        const int64_t row = Y * wp;
        ROAD_STEP_ROW(Y + 1);
        ROAD_FILTER_LINE(double, down, x + row + wp)
        const float *bb = b + row, *xx = x + row, *a = c1 + row, *m = c2 + row;
        float *o = r + row;
        o[0] = (float)((double)bb[0] - (double)a[0] * xx[0]);
        for (int64_t X = 1; X < wp - 1; X++) {
            double k = (up[X] + down[X]) + 2.0 * mid[X];
            o[X] = (float)(((double)bb[X] - (double)a[X] * (double)xx[X]) + k * (double)m[X]);
        }
        o[wp - 1] = (float)((double)bb[wp - 1] - (double)a[wp - 1] * xx[wp - 1]);
        ROAD_ROTATE();
    }
#undef ROAD_STEP_ROW
    const int64_t last = (hp - 1) * wp;
    for (int64_t X = 0; X < wp; X++)
        r[last + X] = (float)((double)b[last + X] - (double)c1[last + X] * x[last + X]);
}

/* Row Y of the smoothers' residual tmp = r - A z (float), from the ring. */
static inline void smooth_residual_row(int64_t wp, const float *restrict rr,
                                       const float *restrict zz, const float *restrict a,
                                       const float *restrict m, const float *up,
                                       const float *mid, const float *down, float *restrict o) {
    o[0] = rr[0] - a[0] * zz[0];
    for (int64_t X = 1; X < wp - 1; X++) {
        float k = (up[X] + down[X]) + 2.0f * mid[X];
        o[X] = (rr[X] - a[X] * zz[X]) + k * m[X];
    }
    o[wp - 1] = rr[wp - 1] - a[wp - 1] * zz[wp - 1];
}

/* Pre-smoothing: z = D r (damped Jacobi from zero), then tmp = r - A z, row by row. */
ROAD_HOT static void fine_first_smooth(const road_grid *g, const float *restrict c1,
                                       const float *restrict c2, const float *restrict dinv,
                                       const float *restrict r, float *restrict z,
                                       float *restrict tmp, float *ring) {
    const int64_t wp = g->wp, hp = g->hp;
#define ROAD_JACOBI_ROW(Y)                                                                \
    for (int64_t X = (Y) * wp; X < ((Y) + 1) * wp; X++) z[X] = r[X] * dinv[X];
    ROAD_JACOBI_ROW(0)
    ROAD_JACOBI_ROW(1)
    ROAD_RING(float, ring)
    ROAD_FILTER_LINE(float, mid, z + wp)
    for (int64_t X = 0; X < wp; X++) tmp[X] = r[X] - c1[X] * z[X];
    for (int64_t Y = 1; Y < hp - 1; Y++) {
        const int64_t row = Y * wp;
        ROAD_JACOBI_ROW(Y + 1)
        ROAD_FILTER_LINE(float, down, z + row + wp)
        smooth_residual_row(wp, r + row, z + row, c1 + row, c2 + row, up, mid, down, tmp + row);
        ROAD_ROTATE();
    }
#undef ROAD_JACOBI_ROW
    const int64_t last = (hp - 1) * wp;
    for (int64_t X = last; X < last + wp; X++) tmp[X] = r[X] - c1[X] * z[X];
}

/* Statistics of the preconditioned residual z = B r: max |z| and r . z in double. A
 * NaN or infinite z makes r . z NaN or infinite (0 * NaN and 0 * inf are NaN), which is
 * how it is detected. */
typedef struct {
    road_v8f top;
    road_sum dot;
} road_stats;

static inline void stats_init(road_stats *st) {
    st->top = (road_v8f){0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    sum_init(&st->dot);
}

static inline void stats_add(road_stats *st, const float *r, const float *z, int64_t n) {
    road_v8i unused = {0, 0, 0, 0, 0, 0, 0, 0}; /* non-finite z shows in r . z */
    max_abs_into(&st->top, &unused, z, n);
    sum_dot(&st->dot, r, z, n);
}

/* (max |z|, r . z); max is NaN when some z is not finite. */
static inline void stats_result(const road_stats *st, float *worst, double *rz) {
    float top = 0.0f;
    for (int k = 0; k < ROAD_LANES; k++) top = st->top[k] > top ? st->top[k] : top;
    *rz = sum_result(&st->dot);
    *worst = isfinite(*rz) ? top : NAN;
}

ROAD_HOT static void vector_stats(const float *r, const float *z, int64_t n, float *worst,
                                  double *rz) {
    road_stats st;
    stats_init(&st);
    stats_add(&st, r, z, n);
    stats_result(&st, worst, rz);
}

/* Post-smoothing: tmp = r - A z, z += D tmp (one damped Jacobi sweep), row by row (z row
 * Y-1 is updated once tmp row Y, the last to read it, is done); and the statistics. */
ROAD_HOT static void fine_last_smooth(const road_grid *g, const float *restrict c1,
                                      const float *restrict c2, const float *restrict dinv,
                                      const float *restrict r, float *restrict z,
                                      float *restrict tmp, float *ring, float *worst,
                                      double *rz) {
    const int64_t wp = g->wp, hp = g->hp;
    road_stats st;
    stats_init(&st);
#define ROAD_FINISH_ROW(Y)                                                                \
    do {                                                                                  \
        for (int64_t X = (Y) * wp; X < ((Y) + 1) * wp; X++) z[X] = z[X] + tmp[X] * dinv[X]; \
        stats_add(&st, r + (Y) * wp, z + (Y) * wp, wp);                                   \
    } while (0)
    ROAD_RING(float, ring)
    ROAD_FILTER_LINE(float, mid, z + wp)
    for (int64_t X = 0; X < wp; X++) tmp[X] = r[X] - c1[X] * z[X];
    for (int64_t Y = 1; Y < hp - 1; Y++) {
        const int64_t row = Y * wp;
        ROAD_FILTER_LINE(float, down, z + row + wp)
        smooth_residual_row(wp, r + row, z + row, c1 + row, c2 + row, up, mid, down, tmp + row);
        ROAD_FINISH_ROW(Y - 1);
        ROAD_ROTATE();
    }
    const int64_t last = (hp - 1) * wp;
    for (int64_t X = last; X < last + wp; X++) tmp[X] = r[X] - c1[X] * z[X];
    ROAD_FINISH_ROW(hp - 2);
    ROAD_FINISH_ROW(hp - 1);
#undef ROAD_FINISH_ROW
    stats_result(&st, worst, rz);
}

/* b = 12 x ROAD's right-hand side = c2 (K v), v the image with its unknown pixels set to
 * zero (as _FineOperator.rhs: the centre term of 12 W = K - 4 vanishes on unknowns).
 * `known` (n floats, scratch) receives v on the padded grid. Returns max |v|, or NaN if
 * a kept value is NaN or infinite. */
ROAD_HOT static float right_hand_side(const road_grid *g, const float *restrict c2,
                                      const float *restrict image, float *restrict b,
                                      float *restrict known, float *ring) {
    const int64_t wp = g->wp, hp = g->hp, h = g->h, w = g->w;
    road_v8f top = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    road_v8i bad = {0, 0, 0, 0, 0, 0, 0, 0};
    memset(known, 0, (size_t)g->n * sizeof(float));
    for (int64_t i = 0; i < h; i++) {
        const float *src = image + i * w, *m = c2 + (i + 1) * wp + 1;
        float *dst = known + (i + 1) * wp + 1;
        for (int64_t j = 0; j < w; j++) dst[j] = m[j] != 0.0f ? 0.0f : src[j];
        max_abs_into(&top, &bad, dst, w);
    }
    ROAD_RING(float, ring)
    ROAD_FILTER_LINE(float, mid, known + wp)
    for (int64_t X = 0; X < wp; X++) b[X] = 0.0f;
    for (int64_t Y = 1; Y < hp - 1; Y++) {
        const int64_t row = Y * wp;
        ROAD_FILTER_LINE(float, down, known + row + wp)
        const float *m = c2 + row;
        float *o = b + row;
        o[0] = 0.0f;
        for (int64_t X = 1; X < wp - 1; X++) o[X] = ((up[X] + down[X]) + 2.0f * mid[X]) * m[X];
        o[wp - 1] = 0.0f;
        ROAD_ROTATE();
    }
    for (int64_t X = (hp - 1) * wp; X < hp * wp; X++) b[X] = 0.0f;
    float scale = 0.0f;
    for (int k = 0; k < ROAD_LANES; k++) {
        if (bad[k]) return NAN; /* a non-finite kept value: the solve reports it */
        scale = top[k] > scale ? top[k] : scale;
    }
    return scale;
}

/* ---- coarse operators: variable 3x3 stencils ------------------------------------ */

/* out = r - A x for the stencil coef (9, n), centre at index 4 (terms subtracted in
 * the order of _StencilOperator.residual). */
ROAD_HOT static void stencil_residual(const road_grid *g, const float *restrict coef,
                                      const float *restrict r, const float *restrict x,
                                      float *restrict out) {
    const int64_t n = g->n, wp = g->wp, lo = wp + 1, hi = n - wp - 1;
    const float *restrict c0 = coef, *restrict c1 = coef + n, *restrict c2 = coef + 2 * n;
    const float *restrict c3 = coef + 3 * n, *restrict centre = coef + 4 * n;
    const float *restrict c5 = coef + 5 * n, *restrict c6 = coef + 6 * n;
    const float *restrict c7 = coef + 7 * n, *restrict c8 = coef + 8 * n;
    for (int64_t i = 0; i < lo; i++) out[i] = r[i] - x[i] * centre[i];
    for (int64_t i = lo; i < hi; i++) {
        float v = r[i] - x[i] * centre[i];
        v = v - x[i - wp - 1] * c0[i];
        v = v - x[i - wp] * c1[i];
        v = v - x[i - wp + 1] * c2[i];
        v = v - x[i - 1] * c3[i];
        v = v - x[i + 1] * c5[i];
        v = v - x[i + wp - 1] * c6[i];
        v = v - x[i + wp] * c7[i];
        v = v - x[i + wp + 1] * c8[i];
        out[i] = v;
    }
    for (int64_t i = hi; i < n; i++) out[i] = r[i] - x[i] * centre[i];
}

/* ---- grid transfers (as _Transfers in _multigrid.py) ---------------------------- */

/* out = P^T t: full weighting from fine grid f onto the interior of coarse grid c. */
ROAD_HOT static void restrict_full(const road_grid *f, const road_grid *c, const float *t,
                          float *out, float *line) {
    const int64_t hc = c->h, wc = c->w, wpf = f->wp, wpc = c->wp;
    for (int64_t I = 0; I < hc; I++) {
        const float *up = t + (2 * I) * wpf, *mid = up + wpf, *down = mid + wpf;
        for (int64_t X = 0; X <= 2 * wc; X++) line[X] = (mid[X] + 0.5f * up[X]) + 0.5f * down[X];
        float *o = out + (I + 1) * wpc + 1;
        for (int64_t J = 0; J < wc; J++)
            o[J] = (line[2 * J + 1] + 0.5f * line[2 * J]) + 0.5f * line[2 * J + 2];
    }
}

/* torch.lerp(s, e, 0.5) as torch's CPU kernels round it. */
static inline float half_lerp(float s, float e) { return e - 0.5f * (e - s); }

/* One coarse row (padded) interpolated along the row onto fine columns 1 .. 2wc-1. */
static inline void interpolate_columns(const float *restrict src, int64_t wc,
                                       float *restrict out) {
    for (int64_t J = 0; J < wc; J++) out[2 * J + 1] = src[J + 1];
    for (int64_t J = 1; J < wc; J++) out[2 * J] = half_lerp(src[J], src[J + 1]);
}

/* sol += mask * (P source): bilinear interpolation from coarse c onto fine f (columns,
 * then rows: the same values as _Transfers.prolong_add up to rounding). `line` holds
 * 2 wp_f floats. */
ROAD_HOT static void prolong_add(const road_grid *f, const road_grid *c,
                                 const float *restrict source, float *restrict sol,
                                 const float *restrict mask, float *restrict line) {
    const int64_t hc = c->h, wc = c->w, wpf = f->wp, wpc = c->wp, last = 2 * wc - 1;
    float *cur = line, *next = line + wpf, *spare;
    interpolate_columns(source + wpc, wc, cur);
    for (int64_t I = 0; I < hc; I++) {
        /* fine row 2I + 1 sits on coarse row I; fine row 2I + 2 lies between I and I + 1 */
        float *o = sol + (2 * I + 1) * wpf;
        const float *m = mask + (2 * I + 1) * wpf;
        for (int64_t X = 1; X <= last; X++) o[X] += cur[X] * m[X];
        if (I + 1 == hc) break;
        interpolate_columns(source + (I + 2) * wpc, wc, next);
        o += wpf;
        m += wpf;
        for (int64_t X = 1; X <= last; X++) o[X] += half_lerp(cur[X], next[X]) * m[X];
        spare = cur, cur = next, next = spare;
    }
}

/* ---- the V-cycle ------------------------------------------------------------------ */

typedef struct {
    const road_problem *pb;
    road_grid grid[ROAD_MAX_LEVELS + 1];
    int64_t m; /* coarsest interior points */
} road_ctx;

/* sol = inverse rhs on the (interior of the) coarsest grid, in double. */
static void dense_solve(const road_grid *g, const double *inverse, int64_t m, const float *rhs,
                        float *sol, road_scratch *s) {
    for (int64_t i = 0, k = 0; i < g->h; i++)
        for (int64_t j = 0; j < g->w; j++) s->dense_in[k++] = rhs[(i + 1) * g->wp + j + 1];
    for (int64_t c = 0; c < m; c++) s->dense_out[c] = 0.0;
    for (int64_t r = 0; r < m; r++) {
        const double v = s->dense_in[r];
        const double *row = inverse + r * m;
        for (int64_t c = 0; c < m; c++) s->dense_out[c] += v * row[c];
    }
    for (int64_t i = 0, k = 0; i < g->h; i++)
        for (int64_t j = 0; j < g->w; j++) sol[(i + 1) * g->wp + j + 1] = (float)s->dense_out[k++];
}

/* levels[k].sol = B_k levels[k].rhs for coarse level k >= 1 of sample `sample`. */
static void coarse_vcycle(const road_ctx *ctx, int64_t k, int64_t sample, road_scratch *s) {
    const road_problem *pb = ctx->pb;
    const road_grid *g = &ctx->grid[k];
    const int64_t n = g->n;
    if (k == pb->levels) {
        dense_solve(g, pb->inverse + sample * ctx->m * ctx->m, ctx->m, s->rhs[k], s->sol[k], s);
        return;
    }
    const float *coef = pb->coef[k - 1] + sample * 9 * n;
    const float *dinv = pb->cdinv[k - 1] + sample * n;
    const float *mask = pb->mask[k - 1] + sample * n;
    float *rhs = s->rhs[k], *sol = s->sol[k], *tmp = s->ctmp[k];
    for (int64_t i = 0; i < n; i++) sol[i] = rhs[i] * dinv[i];
    stencil_residual(g, coef, rhs, sol, tmp);
    restrict_full(g, &ctx->grid[k + 1], tmp, s->rhs[k + 1], s->line);
    coarse_vcycle(ctx, k + 1, sample, s);
    prolong_add(g, &ctx->grid[k + 1], s->sol[k + 1], sol, mask, s->line);
    stencil_residual(g, coef, rhs, sol, tmp);
    for (int64_t i = 0; i < n; i++) sol[i] = sol[i] + tmp[i] * dinv[i];
}

/* z = B r on the fine grid (one symmetric V-cycle); also max |z| and r . z. */
static void precondition(const road_ctx *ctx, int64_t sample, const float *r, float *z,
                         road_scratch *s, float *worst, double *rz) {
    const road_problem *pb = ctx->pb;
    const road_grid *g = &ctx->grid[0];
    const int64_t n = g->n;
    if (pb->levels == 0) {
        dense_solve(g, pb->inverse + sample * ctx->m * ctx->m, ctx->m, r, z, s);
        vector_stats(r, z, n, worst, rz);
        return;
    }
    const float *c1 = pb->c1 + sample * n, *c2 = pb->c2 + sample * n;
    const float *dinv = pb->dinv + sample * n;
    fine_first_smooth(g, c1, c2, dinv, r, z, s->tmp, s->ring);
    restrict_full(g, &ctx->grid[1], s->tmp, s->rhs[1], s->line);
    coarse_vcycle(ctx, 1, sample, s);
    prolong_add(g, &ctx->grid[1], s->sol[1], z, c2, s->line);
    fine_last_smooth(g, c1, c2, dinv, r, z, s->tmp, s->ring, worst, rz);
}

/* ---- conjugate gradients for one (sample, channel) system ------------------------- */

static void solve_system(const road_ctx *ctx, int64_t job, road_scratch *s) {
    const road_problem *pb = ctx->pb;
    const road_grid *g = &ctx->grid[0];
    const int64_t n = g->n, sample = job / pb->channels;
    const float *c1 = pb->c1 + sample * n, *c2 = pb->c2 + sample * n;
    float *x = pb->x + job * n, *r = s->r, *z = s->z, *p = s->p, *b = s->b;
    pb->scale[job] = right_hand_side(g, c2, pb->values + job * g->h * g->w, b, s->tmp, s->ring);
    const float threshold = (float)pb->tol * pb->scale[job];
    int64_t iterations = 0, restarts = 0, status = ROAD_CONVERGED;
    float estimate = 0.0f, worst = 0.0f, beta = 0.0f;
    int fresh = 1; /* the next direction is p = z (first step, or a restart) */
    double rz = 0.0, rz_new = 0.0;
    memset(x, 0, (size_t)n * sizeof(float));
    if (pb->scale[job] == 0.0f) goto done; /* b = 0: x = 0 is exact */

    precondition(ctx, sample, b, z, s, &worst, &rz); /* x = 0: r = b */
    float best = worst;
    while (!(worst <= threshold)) {
        if (!isfinite(worst)) {
            status = ROAD_BROKEN;
            goto done;
        }
        if (iterations >= pb->max_iter) {
            status = ROAD_UNCONVERGED;
            goto done;
        }
        iterations++;
        double pap = fine_energy_direction(g, c1, c2, z, p, beta, fresh, s->ring);
        float alpha = (float)(rz / (pap > 1e-300 ? pap : 1e-300));
        fine_step_residual(g, c1, c2, b, x, p, alpha, r, s->ringd);
        precondition(ctx, sample, r, z, s, &worst, &rz_new);
        /* Stagnation (see _CGState.check): restart with p = z. */
        fresh = worst > 0.5f * best;
        restarts += fresh && !(worst <= threshold);
        if (worst < best) best = worst;
        beta = (float)(rz_new / (rz > 1e-300 ? rz : 1e-300));
        rz = rz_new;
    }
    for (int64_t i = 0; i < n; i++) x[i] = x[i] + z[i]; /* passed: one more correction */
    estimate = worst;
done:
    pb->iterations[job] = iterations;
    pb->restarts[job] = restarts;
    pb->status[job] = status;
    pb->estimate[job] = estimate;
    pb->worst[job] = worst;
}

/* ---- threads ---------------------------------------------------------------------- */

/*
 * fn(args + t * arg_size) for t = 0 .. threads - 1, concurrently. With OpenMP (GCC
 * -fopenmp, as pyproject.toml builds it) the threads are OpenMP's: the process's
 * libgomp.so.1 is torch's, so these are the same threads torch's own operations run on,
 * instead of new ones competing with torch's workers (which spin for a while after each
 * parallel torch operation: on 2 cores that cost the solve 3-4 ms of 60). Without
 * OpenMP, pthreads (the calling thread runs t = 0). Every caller shares out its work
 * through an atomic counter, so fewer threads than asked for still do all of it.
 */
static void run_threads(int64_t threads, void *(*fn)(void *), void *args, size_t arg_size) {
#ifdef _OPENMP
#pragma omp parallel num_threads((int)threads)
    fn((char *)args + (size_t)omp_get_thread_num() * arg_size);
#else
    pthread_t ids[64];
    int started[64] = {0};
    for (int64_t t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, fn, (char *)args + (size_t)t * arg_size) == 0;
    fn(args);
    for (int64_t t = 1; t < threads; t++)
        if (started[t]) pthread_join(ids[t], NULL);
#endif
}

/* ---- running a function per sample on several threads ----------------------------- */

typedef void (*road_sample_fn)(const void *ctx, int64_t sample, float *scratch);

typedef struct {
    road_sample_fn fn;
    const void *ctx;
    float *scratch;
    int64_t batch, *next;
} road_sample_worker;

static void *sample_work(void *arg) {
    road_sample_worker *w = arg;
    for (;;) {
        int64_t sample = __atomic_fetch_add(w->next, 1, __ATOMIC_RELAXED);
        if (sample >= w->batch) break;
        w->fn(w->ctx, sample, w->scratch);
    }
    return NULL;
}

/* fn(ctx, sample, scratch) for every sample, on up to `threads` threads, each with its
 * own `floats` floats of scratch, zeroed once (a thread reuses it from sample to
 * sample). Returns 0, or ROAD_NO_MEMORY (nothing run). */
static int for_each_sample(int64_t batch, int64_t threads, size_t floats,
                           road_sample_fn fn, const void *ctx) {
    if (threads < 1) threads = 1;
    if (threads > batch) threads = batch < 1 ? 1 : batch;
    if (threads > 64) threads = 64;
    road_sample_worker workers[64];
    int64_t next = 0;
    for (int64_t t = 0; t < threads; t++) {
        workers[t] = (road_sample_worker){fn, ctx, calloc(floats + 1, sizeof(float)), batch,
                                          &next};
        if (workers[t].scratch == NULL) {
            for (int64_t k = 0; k <= t; k++) free(workers[k].scratch);
            return ROAD_NO_MEMORY;
        }
    }
    run_threads(threads, sample_work, workers, sizeof workers[0]);
    for (int64_t t = 0; t < threads; t++) free(workers[t].scratch);
    return 0;
}

/* ---- Galerkin products ---------------------------------------------------------- */

/*
 * P^T A P for bilinear P, one axis at a time, as galerkin() in _multigrid.py: each
 * output entry receives its terms in the same order (e, then d, over _GALERKIN_TERMS),
 * and every weight is a power of two, so torch's add(alpha=weight) (one rounding, fused
 * or not) rounds like `t + weight * s` here: the products equal torch's bit for bit.
 */
static const float road_p_weight[3] = {0.5f, 1.0f, 0.5f}; /* by 1-D offset + 1 */

typedef struct {
    int64_t h, w;          /* fine grid */
    const float *c1, *c2;  /* the fine operator (batch, n), or NULL: use `stencil` */
    const float *stencil;  /* (batch, 3, 3, h, w) */
    float *out;            /* (batch, 3, 3, h / 2 + 1, w / 2 + 1) */
} road_galerkin_job;

static void galerkin_sample(const void *arg, int64_t sample, float *rows) {
    const road_galerkin_job *job = arg;
    const int64_t h = job->h, w = job->w, hc = h / 2 + 1, wc = w / 2 + 1;
    const int64_t wp = 2 * (w / 2 + 1) + 1, n = (2 * (h / 2 + 1) + 1) * wp;
    float *out = job->out + sample * 9 * hc * wc;
    memset(rows, 0, 9 * (size_t)(hc * w) * sizeof(float));
    memset(out, 0, 9 * (size_t)(hc * wc) * sizeof(float));
    /* Rows: rows[D][b][I][j] += p(e) p(e + d - 2D) A[(2I + e, j), (d, b)], coarse row by
     * coarse row (each output element still gets its terms in (e, d) order). */
    for (int64_t I = 0; I < hc; I++) {
        for (int e = -1; e <= 1; e++) {
            const int64_t i = 2 * I + e;
            if (i < 0 || i >= h) continue;
            for (int d = -1; d <= 1; d++) {
                for (int D = -1; D <= 1; D++) {
                    const int t = e + d - 2 * D;
                    if (t < -1 || t > 1) continue;
                    const float weight = road_p_weight[e + 1] * road_p_weight[t + 1];
                    for (int b = -1; b <= 1; b++) {
                        float *restrict o = rows + (((D + 1) * 3 + (b + 1)) * hc + I) * w;
                        if (job->c1 && d == 0 && b == 0) { /* the diagonal, c1 - 4 c2 */
                            const float *restrict a = job->c1 + sample * n + (i + 1) * wp + 1;
                            const float *restrict u = job->c2 + sample * n + (i + 1) * wp + 1;
                            for (int64_t j = 0; j < w; j++) o[j] += weight * (a[j] - 4.0f * u[j]);
                        } else if (job->c1) { /* a coupling, -w_db c2[i, j] c2[i + d, j + b] */
                            const float *restrict u = job->c2 + sample * n + (i + 1) * wp + 1;
                            const float *restrict v = u + d * wp + b;
                            const float coupling = (d != 0 && b != 0) ? -1.0f : -2.0f;
                            for (int64_t j = 0; j < w; j++)
                                o[j] += weight * ((u[j] * v[j]) * coupling);
                        } else {
                            const float *restrict a =
                                job->stencil + ((sample * 9 + (d + 1) * 3 + (b + 1)) * h + i) * w;
                            for (int64_t j = 0; j < w; j++) o[j] += weight * a[j];
                        }
                    }
                }
            }
        }
    }
    /* Columns: out[D][E][I][J] += p(e) p(e + d - 2E) rows[D][d][I][2J + e]. */
    for (int64_t I = 0; I < hc; I++) {
        for (int a = 0; a < 3; a++) {
            for (int e = -1; e <= 1; e++) {
                /* J with 0 <= 2J + e <= w - 1 (floor division: w = 1, e = 1 has none) */
                const int64_t first = e < 0 ? 1 : 0, last = w - 1 - e >= 0 ? (w - 1 - e) / 2 : -1;
                for (int d = -1; d <= 1; d++) {
                    for (int E = -1; E <= 1; E++) {
                        const int t = e + d - 2 * E;
                        if (t < -1 || t > 1) continue;
                        const float weight = road_p_weight[e + 1] * road_p_weight[t + 1];
                        const float *restrict in = rows + ((a * 3 + (d + 1)) * hc + I) * w + e;
                        float *restrict o = out + ((a * 3 + (E + 1)) * hc + I) * wc;
                        for (int64_t J = first; J <= last; J++) o[J] += weight * in[2 * J];
                    }
                }
            }
        }
    }
}

/*
 * The Galerkin stencil of the first coarse grid, from the fine operator: `dims` = (h, w)
 * of the fine grid; c1, c2: (batch, n) as _FineOperator's; out: (batch, 3, 3, hc, wc),
 * hc = h / 2 + 1. Returns 0, or ROAD_NO_MEMORY (nothing written then).
 */
int road_galerkin_first(int64_t batch, const int64_t *dims, const float *c1, const float *c2,
                        float *out, int64_t threads) {
    const road_galerkin_job job = {dims[0], dims[1], c1, c2, NULL, out};
    const size_t rows = 9 * (size_t)((dims[0] / 2 + 1) * dims[1]);
    return for_each_sample(batch, threads, rows, galerkin_sample, &job);
}

/* The Galerkin product of a coarse stencil (batch, 3, 3, h, w) into out (batch, 3, 3,
 * h / 2 + 1, w / 2 + 1). Returns 0, or ROAD_NO_MEMORY. */
int road_galerkin(int64_t batch, const int64_t *dims, const float *stencil, float *out,
                  int64_t threads) {
    const road_galerkin_job job = {dims[0], dims[1], NULL, NULL, stencil, out};
    const size_t rows = 9 * (size_t)((dims[0] / 2 + 1) * dims[1]);
    return for_each_sample(batch, threads, rows, galerkin_sample, &job);
}

/* ---- assembling the imputed images ------------------------------------------------ */

/*
 * out = image with each solved sample's removed pixels set to its solution plus
 * noise_std times its noise (as road.py's _assemble_group, for float32 images): kept pixels
 * are copied (a select, never arithmetic, so NaN at removed pixels cannot leak).
 * Sample k of the solved group is image place[k][0], its box starts at (place[k][1],
 * place[k][2]) and is place[k][3] x place[k][4]. Its solution for channel c starts at
 * x + (k * channels + c) * n, rows wp apart (the box at the top left of the solve grid);
 * its noise is (channels, removed pixels), the removed pixels in row-major order (all
 * of them lie in the box).
 */
typedef struct {
    int64_t count, channels, height, width, wp, n, threads; /* wp, n: strides of x */
    const int64_t *place;      /* (count, 5) */
    const float *images;       /* (batch, channels, height, width) */
    const uint8_t *keep;       /* (batch, height, width): 1 = kept */
    float *out;                /* like images */
    const float *x;            /* the solutions (see above) */
    const float *const *noise; /* per sample, or NULL (no noise) */
    const int64_t *removed;    /* per sample: removed pixels (the noise's row length) */
    float noise_std;
} road_assembly;

static void assemble_sample(const void *arg, int64_t k, float *scratch) {
    (void)scratch;
    const road_assembly *a = arg;
    const int64_t *place = a->place + 5 * k;
    const int64_t index = place[0], r0 = place[1], c0 = place[2], bh = place[3], bw = place[4];
    const int64_t H = a->height, W = a->width;
    const uint8_t *keep = a->keep + index * H * W;
    for (int64_t c = 0; c < a->channels; c++) {
        const float *image = a->images + (index * a->channels + c) * H * W;
        float *out = a->out + (index * a->channels + c) * H * W;
        const float *x = a->x + (k * a->channels + c) * a->n;
        const float *noise = NULL;
        if (a->noise && a->noise[k]) noise = a->noise[k] + c * a->removed[k];
        for (int64_t i = 0; i < H; i++) {
            const int64_t row = i * W;
            if (i < r0 || i >= r0 + bh) {
                memcpy(out + row, image + row, (size_t)W * sizeof(float));
                continue;
            }
            memcpy(out + row, image + row, (size_t)c0 * sizeof(float));
            memcpy(out + row + c0 + bw, image + row + c0 + bw, (size_t)(W - c0 - bw) * sizeof(float));
            const float *xs = x + (i - r0) * a->wp;
            const uint8_t *kk = keep + row + c0;
            const float *im = image + row + c0;
            float *o = out + row + c0;
            if (noise) {
                for (int64_t j = 0; j < bw; j++) {
                    o[j] = kk[j] ? im[j] : xs[j] + a->noise_std * *noise;
                    noise += !kk[j]; /* the next removed pixel's draw */
                }
            } else {
                for (int64_t j = 0; j < bw; j++) o[j] = kk[j] ? im[j] : xs[j];
            }
        }
    }
}

/* Assemble every sample of `a` (threads over samples). Returns 0 or ROAD_NO_MEMORY. */
int road_assemble(const road_assembly *a) {
    return for_each_sample(a->count, a->threads, 0, assemble_sample, a);
}

/* ---- solving every system ------------------------------------------------------ */

/* Floats of per-thread scratch for road_pcg (see carve_scratch). */
static size_t scratch_floats(const road_ctx *ctx) {
    const int64_t n = ctx->grid[0].n, wp = ctx->grid[0].wp;
    size_t total = 2 * (3 * (size_t)wp + 2 * (size_t)ctx->m); /* ringd, dense_in/out */
    total += 5 * (size_t)n + (2 * (size_t)wp + 4) + 4 * (size_t)wp;
    for (int64_t k = 1; k <= ctx->pb->levels; k++) total += 3 * (size_t)ctx->grid[k].n;
    return total;
}

/* Point the fields of `s` into one thread's zeroed scratch block (doubles first, so
 * they are aligned). Padding entries that are never written stay zero. */
static void carve_scratch(const road_ctx *ctx, float *block, road_scratch *s) {
    const int64_t n = ctx->grid[0].n, wp = ctx->grid[0].wp;
    double *d = (double *)block;
    s->ringd = d, d += 3 * wp;
    s->dense_in = d, d += ctx->m;
    s->dense_out = d, d += ctx->m;
    float *f = (float *)d;
    s->r = f, f += n;
    s->z = f, f += n;
    s->p = f, f += n;
    s->tmp = f, f += n;
    s->b = f, f += n;
    s->line = f, f += 2 * wp + 4;
    s->ring = f, f += 4 * wp;
    for (int64_t k = 1; k <= ctx->pb->levels; k++) {
        const int64_t nk = ctx->grid[k].n;
        s->rhs[k] = f, f += nk;
        s->sol[k] = f, f += nk;
        s->ctmp[k] = f, f += nk;
    }
}

static void solve_job(const void *arg, int64_t job, float *block) {
    const road_ctx *ctx = arg;
    road_scratch s;
    carve_scratch(ctx, block, &s);
    solve_system(ctx, job, &s);
}

/*
 * Solve every (sample, channel) system of `pb`. Returns 0, or ROAD_NO_MEMORY if the
 * scratch could not be allocated (nothing solved then) or the problem is malformed (too
 * many levels).
 */
int road_pcg(const road_problem *pb) {
    if (pb->levels < 0 || pb->levels > ROAD_MAX_LEVELS) return ROAD_NO_MEMORY;
    road_ctx ctx;
    ctx.pb = pb;
    for (int64_t k = 0; k <= pb->levels; k++)
        ctx.grid[k] = make_grid(pb->dims[2 * k], pb->dims[2 * k + 1]);
    ctx.m = ctx.grid[pb->levels].h * ctx.grid[pb->levels].w;
    return for_each_sample(pb->batch * pb->channels, pb->threads, scratch_floats(&ctx),
                           solve_job, &ctx);
}
