/*
 * matvec.cuh - MATVEC: out[m, lo:hi] = x[m, :] . w[lo:hi, :]^T (man 5
 * mpk-blob), with the rmsnorm or silu-mul prologue, the residual and
 * argmax-partials epilogues. The bf16 rows are read 16 bytes a lane: the
 * first rows that fit in a slot of the weight ring (common.cuh) are copied
 * into shared memory ahead of the task, after the worker's previous task on
 * sm_90 (matvec_issue: bulk copies on the slot's mbarrier, as the host
 * decoded them into a kcopy) or by the task itself before its wait below
 * that (matvec_stage: cp.async); the rest are streamed past L1, two rows a
 * warp at a time (dot2_bf16), their first PREFETCH_MAX bytes pulled toward
 * L2 ahead of use. The residual of a row is loaded before its sum.
 *
 * That is the decode case, M = 1. A chunk step has M = C rows of x, and a
 * task of R = hi - lo weight rows is then a small GEMM, R x M outputs over
 * K. With bf16 weights (mv_fast) it goes to matvec_rows, in passes of at
 * most MV_RB weight rows x MV_MB x rows. A pass with x in f32 or bf16 and
 * K a multiple of 32 (every pass of a chunk graph) runs on tensor cores,
 * mv_tc: mma.sync m16n8k16 with bf16 operands and fp32 sums, f32 x split
 * into bf16 hi + lo (two MMAs, the products good to about 2^-17 of x), x
 * streamed in slabs of 32 through a cp.async ring of stages, the weight
 * rows read in the ring slot they were copied to. Its prologues: rmsnorm
 * as x * gamma into the MMAs (hi + lo) and each row's sum of squares in
 * the same pass, the sums times the row's 1 / rms at the end; silu-mul
 * (x and b bf16) as silu(x) * b in fp32 (hi + lo). Other passes take
 * mv_pass, which reads each weight element once per pass (not once per
 * row of x) and keeps the FMA pipes fed from shared memory:
 *
 *   passes   blocks of at most MV_RB weight rows x MV_MB x rows (the
 *            chunk shapes, R <= 64 and M = 64, are one pass); each walks
 *            all of K.
 *   tiles    a thread sums MV_TR = 8 weight rows x MV_TM = 4 x rows (32
 *            fp32 accumulators). The rt x mt tiles of a pass are repeated
 *            G times (G = NT / tiles, at most what a slab holds) and copy
 *            g sums the K units (4 elements) v = g mod G, so that R = 8
 *            (16 tiles for M = 64) still fills the CTA; a tree through
 *            shared memory adds the copies at the end.
 *   slabs    K in slabs of U units, U a multiple of G: x after its
 *            prologue and w, both fp32 in shared memory, unit-major. Unit
 *            v of x row m = 4 t + i is float4 v * xs + i * mtp + t (mtp:
 *            mt up to a power of 2), of weight row r float4 v * ws + 9 *
 *            (r / 8) + r % 8, xs and ws odd. A thread's step is 4 x and 8
 *            w float4s for 128 FMAs; lane pairs n, n ^ 1 share x (rt even)
 *            and n, n ^ 2 share w, which halves those loads' wavefronts,
 *            and the lanes of a quarter warp hit distinct banks.
 *   staging  per slab a thread loads up to MV_XI 8-byte pieces of x (a
 *            unit of a 16-bit dtype, half of f32), as many of the
 *            silu-mul's b, and MV_WI units of w, into registers before the
 *            slab before is computed, and stores them (prologue applied,
 *            fp32) between two barriers after it: x and b through L2
 *            (ld.global.cg), gamma by its view's path, the weight rows
 *            from the ring slot when they were staged there (after its
 *            mbarrier, as for M = 1), else past L1. A warp loads 32 bytes
 *            of each of 8 rows; a quarter warp stores 8 consecutive float4s.
 *            The rmsnorm factor of each x row is a pass over the row first,
 *            a warp per row, while slab 0 is in flight.
 *   epilogue the sums go through shared memory once more, so that the
 *            residual loads and the stores run along rows of out.
 *
 * What a pass reads of its task is a mv_desc at the start of shared
 * memory, not registers, and mv_pass is a call: inlined, it changed the
 * register allocation of the whole kernel (spills in attention and the
 * worker loop). Shared memory is MV_HEAD + the largest of the slab (16 U
 * (xs + ws)), the tree (128 (G / 2) tiles) and the output tile (4 M (8 rt
 * + 1)): at most 34 KiB, under what attention needs at head dim 128, so
 * that a chunk graph does not shrink the weight ring of the decode steps.
 *
 * Numerics are the spec's and the M = 1 path's: the same prologue
 * formulas in fp32, fp32 products (mv_tc: of x's hi + lo) and fp32 sums
 * (in another order), residual after the sum, rounding at the store.
 * EPI_ARGMAX has M = 1 (the reader refuses it otherwise), so matvec_rows
 * has no argmax. Other dtypes, odd
 * K or unaligned tensors take the M = 1 loop once per row of x.
 */
#ifndef MPK_CUDA_MATVEC_CUH
#define MPK_CUDA_MATVEC_CUH

#include "common.cuh"


/* x[m, :] after the prologue, fp32, into xs (all threads). */
__device__ void matvec_input(const kparams &P, const mpkb_task *t, uint32_t m, uint32_t K, float *xs)
{
    const mpkb_tensor *X = &P.tensors[t->matvec.x];
    const uint8_t *xp = P.tp[t->matvec.x];
    uint32_t xd = X->dtype;
    if (t->flags & MPKB_F_PRO_RMSNORM) {
        float ss = 0;
        for (uint32_t k = threadIdx.x; k < K; k += NT) {
            float v = ldx(xd, xp, (uint64_t)m * K + k);
            xs[k] = v;
            ss += v * v;
        }
        float r = 1.0f / sqrtf(block_sum(ss) / (float)K + t->matvec.eps);
        tview g = view(P, t->matvec.pro);
        for (uint32_t k = threadIdx.x; k < K; k += NT)
            xs[k] = ldv(g, k) * (xs[k] * r);
    } else if (t->flags & MPKB_F_PRO_SILU_MUL) {
        tview b = view(P, t->matvec.pro);
        for (uint32_t k = threadIdx.x; k < K; k += NT) {
            float v = ldx(xd, xp, (uint64_t)m * K + k);
            xs[k] = v / (1.0f + expf(-v)) * ldv(b, (uint64_t)m * K + k);
        }
    } else {
        for (uint32_t k = threadIdx.x; k < K; k += NT)
            xs[k] = ldx(xd, xp, (uint64_t)m * K + k);
    }
    __syncthreads();
}

/* Where a matvec keeps things in shared memory: xs (K floats, padded to
 * kpad) and red (NW floats), smem_matvec's bytes; its first weight rows (the
 * bf16 fast path only) as many as fit in a slot of the weight ring
 * (common.cuh), which lies after what every task kind needs. */
__host__ __device__ __forceinline__ uint32_t mv_kpad(uint32_t K) { return (K + 3) & ~3u; }

/* matvec_rows (M > 1, the header comment) keeps a mv_desc and the rmsnorm
 * factors, then one slab, in shared memory: mv_rows_bytes. */
#define MV_TR 8             /* weight rows per thread */
#define MV_TM 4             /* x rows per thread */
#define MV_RB 64            /* weight rows per pass, at most */
#define MV_MB 64            /* x rows per pass, at most */
#define MV_XI 4             /* 8-byte pieces of x (and of b) a thread stages per slab, at most */
#define MV_WI 3             /* and of w */
#define MV_SLAB 34304u      /* bytes of a slab (its x and w), at most: MV_HEAD + this <= 34 KiB */
#define MV_HEAD 512         /* bytes before the slab: the task (mv_desc), the rmsnorm factors */

/* How matvec_rows cuts one pass of R weight rows x M x rows over K. */
typedef struct {
    uint32_t rt, mt, mtp; /* thread tiles along the weight rows, the x rows; mt up to a power of 2 */
    uint32_t groups;      /* G: copies of each tile, each summing its own K units */
    uint32_t units;       /* U: 4-element K units per slab, a multiple of G */
    uint32_t xs, ws;      /* float4s of one unit of the x slab, of the w slab */
    uint32_t lmtp, lpbx, lpbw; /* log2 of mtp and of the staging blocks of 8 slab rows of x, w */
} mv_plan;

__host__ __device__ __forceinline__ uint32_t mv_min(uint32_t a, uint32_t b) { return a < b ? a : b; }

__host__ __device__ __forceinline__ uint32_t mv_log2(uint32_t v) /* of the power of 2 >= v */
{
    uint32_t l = 0;
    while ((1u << l) < v)
        l++;
    return l;
}

/* R <= MV_RB, M <= MV_MB, K % 4 == 0; x16: x is a 16-bit dtype (a piece
 * of 8 bytes is a unit of it, else half a unit). */
__host__ __device__ inline mv_plan mv_plan_of(uint32_t R, uint32_t M, uint32_t K, bool x16)
{
    mv_plan p;
    p.rt = (R + MV_TR - 1) / MV_TR, p.mt = (M + MV_TM - 1) / MV_TM;
    p.lmtp = mv_log2(p.mt), p.mtp = 1u << p.lmtp;
    p.xs = MV_TM * p.mtp + 1, p.ws = ((MV_TR + 1) * p.rt) | 1; /* odd: a unit further is another bank */
    p.lpbx = mv_log2((MV_TM * p.mtp + 7) / 8), p.lpbw = mv_log2(p.rt);
    /* a slab of U units is U / 4 x 8 x pb pieces of each (twice for f32 x)
     * over NT threads */
    uint32_t xcap = (x16 ? 4 : 2) * MV_XI * NW >> p.lpbx, wcap = 4 * MV_WI * NW >> p.lpbw;
    uint32_t cap = mv_min(mv_min(xcap, wcap), MV_SLAB / (16 * (p.xs + p.ws))), k4 = K / 4;
    uint32_t g = mv_min(mv_min(NT / (p.rt * p.mt), cap), k4 ? k4 : 1), u = cap / g;
    if (g * u > k4)
        u = (k4 + g - 1) / g;
    p.groups = g, p.units = g * (u ? u : 1);
    return p;
}

/* Shared memory of one pass: the head, then the slab, which the tree of
 * partial sums and the output tile reuse. */
__host__ __device__ inline uint32_t mv_pass_bytes(uint32_t R, uint32_t M, uint32_t K, bool x16)
{
    mv_plan p = mv_plan_of(R, M, K, x16);
    uint32_t slab = 16 * p.units * (p.xs + p.ws);
    uint32_t tree = 16 * (MV_TR * MV_TM / 4) * (p.groups / 2) * p.rt * p.mt;
    uint32_t out = 4 * M * (MV_TR * p.rt + 1);
    uint32_t b = slab > tree ? slab : tree;
    return MV_HEAD + (b > out ? b : out);
}

/* Pass i of n over `all` rows starts at mv_cut(all, n, i). */
__host__ __device__ __forceinline__ uint32_t mv_cut(uint32_t all, uint32_t n, uint32_t i)
{
    return (uint32_t)((uint64_t)all * i / n);
}

/* The most any pass of an R x M x K task needs (passes are of two sizes along each). */
__host__ __device__ inline uint32_t mv_rows_bytes(uint32_t R, uint32_t M, uint32_t K, bool x16)
{
    uint32_t nr = (R + MV_RB - 1) / MV_RB, nm = (M + MV_MB - 1) / MV_MB, most = 0;
    uint32_t rs[2] = {R / nr, (R + nr - 1) / nr}, ms[2] = {M / nm, (M + nm - 1) / nm};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            if (rs[a] && ms[b]) {
                uint32_t s = mv_pass_bytes(rs[a], ms[b], K, x16);
                most = s > most ? s : most;
            }
    return most;
}

/* M > 1 on tensor cores (mv_tc, below): the slab and its stages. */
#ifndef MPK_TC
#if __CUDA_ARCH__ >= 800
#define MPK_TC 1 /* mma.sync with bf16 operands */
#else
#define MPK_TC 0
#endif
#endif
#define TC_KS 32     /* K elements per slab */
#define TC_XR32 144  /* bytes per x row of a slab, f32 x: 128 + 16, a quarter warp on distinct banks */
#define TC_XR16 64   /* bf16 x */
#define TC_WR 64     /* bytes per row of a weight slab */
#define TC_STAGES 4  /* slabs in flight, at most, in the slab */
#define TC_STAGES_RING 8 /* in the free ring slots (mv_stages) */

/* Can mv_tc take the pass (K in whole slabs; x f32 or bf16, with no
 * prologue or the rmsnorm one, or the silu-mul prologue with x and b both
 * bf16; prd: b's dtype)? */
__host__ __device__ __forceinline__ bool tc_ok(uint32_t flags, uint32_t xd, uint32_t prd, uint32_t K)
{
    if (K % TC_KS != 0)
        return false;
    if (flags & MPKB_F_PRO_SILU_MUL)
        return xd == MPKB_BF16 && prd == MPKB_BF16;
    return xd == MPKB_F32 || xd == MPKB_BF16;
}

/* Bytes per x row of a slab: f32 x, or with the silu-mul prologue x's 32
 * bf16 then b's (64 + 64 bytes: the f32 row's stride, so that a quarter
 * warp's loads hit distinct banks); bf16 x alone. */
__host__ __device__ __forceinline__ uint32_t tc_xr(bool x16, bool silu) { return x16 && !silu ? TC_XR16 : TC_XR32; }

/* Bytes of one stage: M x rows and the pass's `rest` weight rows that are
 * not in the ring slot. */
__host__ __device__ __forceinline__ uint32_t tc_stage(uint32_t M, uint32_t rest, bool x16, bool silu)
{
    return (M + 15) / 16 * 16 * tc_xr(x16, silu) + rest * TC_WR; /* x rows to whole tiles of 16 */
}

__host__ __device__ inline uint32_t smem_matvec(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)why, (void)n;
    const mpkb_tensor *X = &T[t->matvec.x];
    uint32_t s = 4u * (mv_kpad(X->dims[1]) + NW);
    /* M > 1 with bf16 rows: matvec_rows, unless a tensor is unaligned */
    if (X->dims[0] > 1 && T[t->matvec.w].dtype == MPKB_BF16 && X->dims[1] % 8 == 0) {
        uint32_t r = mv_rows_bytes((uint32_t)(t->matvec.hi - t->matvec.lo), X->dims[0], X->dims[1],
                                   X->dtype != MPKB_F32);
        uint32_t prd = t->matvec.pro != MPKB_NONE ? T[t->matvec.pro].dtype : X->dtype;
        if (tc_ok(t->flags, X->dtype, prd, X->dims[1]))
            r = MV_HEAD + MV_SLAB; /* mv_tc fills the slab with stages */
        s = r > s ? r : s;
    }
    return s;
}

__device__ __forceinline__ bool mv_fast(const kparams &P, const mpkb_task *t)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    return W->dtype == MPKB_BF16 && W->dims[1] % 8 == 0 && ((uintptr_t)P.tp[t->matvec.w] & 15) == 0;
}

/* The weight rows of t that go into a ring slot. */
__device__ __forceinline__ uint32_t mv_staged(const kparams &P, const mpkb_task *t)
{
    if (!mv_fast(P, t))
        return 0;
    uint64_t rows = P.ring_slot / (2ull * P.tensors[t->matvec.w].dims[1]);
    uint64_t want = (uint64_t)(t->matvec.hi - t->matvec.lo);
    return (uint32_t)(rows < want ? rows : want);
}

__device__ __forceinline__ uint4 *ring_buf(const kparams &P, float *sm, uint32_t slot)
{
    return (uint4 *)((uint8_t *)sm + P.ring_off + (uint64_t)slot * P.ring_slot);
}

#if MPK_RING
/* Thread 0: the copy of a task's staged rows into ring slot `slot`,
 * completing on the slot's mbarrier, and the rest of its rows (up to
 * PREFETCH_MAX) pulled toward L2, as the host decoded them (kcopy). false:
 * nothing to copy. */
__device__ bool matvec_issue(const kcopy *c, float *sm, const kparams &P, uint32_t slot)
{
    kcopy k = *c; /* one load */
    if (!k.bytes)
        return false;
    bulk_load(ring_buf(P, sm, slot), k.src, k.bytes, &s_ring.bar[slot]);
    if (k.rest >= 16)
        bulk_prefetch_l2(k.src + k.bytes, k.rest);
    s_ring.rows[slot] = k.rows;
    return true;
}
#else
/* Below sm_90: all threads copy the staged rows into slot 0 with cp.async
 * (and pull the rest toward L2) before the task's wait; the task waits for
 * them with cp_async_wait_all + __syncthreads. */
__device__ void matvec_stage(const kparams &P, const mpkb_task *t, float *sm)
{
    const mpkb_tensor *W = &P.tensors[t->matvec.w];
    uint64_t row = (uint64_t)W->dims[1] * dsize(W->dtype);
    const uint8_t *w = P.tp[t->matvec.w] + row * (uint64_t)t->matvec.lo;
    uint64_t all = row * (uint64_t)(t->matvec.hi - t->matvec.lo), done = row * mv_staged(P, t);
    if (done) {
        uint4 *buf = ring_buf(P, sm, 0);
        for (uint64_t i = threadIdx.x; i < done / 16; i += NT)
            cp_async16(buf + i, w + 16 * i);
        asm volatile("cp.async.commit_group;" ::: "memory");
    }
    uint64_t end = all - done > PREFETCH_MAX ? done + PREFETCH_MAX : all;
    for (uint64_t o = done + (uint64_t)threadIdx.x * 128; o < end; o += NT * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(w + o));
}
#endif

/* 8 bf16 weights u times 8 floats of x (p, then q), into a0 and a1. */
__device__ __forceinline__ void fma8(uint4 u, float4 p, float4 q, float &a0, float &a1)
{
    a0 += bf16lo(u.x) * p.x + bf16hi(u.x) * p.y + bf16lo(u.y) * p.z + bf16hi(u.y) * p.w;
    a1 += bf16lo(u.z) * q.x + bf16hi(u.z) * q.y + bf16lo(u.w) * q.z + bf16hi(u.w) * q.w;
}

/* Dot of bf16 weight chunks [c0, c1) of 8 elements with xs, lane-strided. */
template <bool SMEM>
__device__ __forceinline__ float dot_bf16(const uint4 *w, const float *xs, uint32_t c0, uint32_t c1, uint32_t lane)
{
#define LDW(p) (SMEM ? *(p) : ld_stream(p))
    float a0 = 0, a1 = 0;
    uint32_t c = c0 + lane;
    for (; c + 96 < c1; c += 128) {
        uint4 u[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            u[j] = LDW(w + c + 32 * j);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float4 *x = (const float4 *)(xs + 8 * (c + 32 * j));
            float4 p = x[0], q = x[1];
            fma8(u[j], p, q, a0, a1);
        }
    }
    for (; c < c1; c += 32) {
        uint4 u = LDW(w + c);
        const float4 *x = (const float4 *)(xs + 8 * c);
        float4 p = x[0], q = x[1];
        fma8(u, p, q, a0, a1);
    }
#undef LDW
    return a0 + a1;
}

/* The epilogue of one finished row: residual (res, loaded ahead), store,
 * argmax candidate. */
__device__ __forceinline__ void matvec_row_done(const kparams &P, const mpkb_task *t, uint64_t m, uint64_t N,
                                                uint32_t r, float acc, float res, float &best, int32_t &best_at)
{
    if (better(acc, (int32_t)r, best, best_at))
        best = acc, best_at = (int32_t)r;
    if (t->flags & MPKB_F_EPI_RESIDUAL)
        acc += res;
    stx(P.tensors[t->matvec.out].dtype, P.tp[t->matvec.out], m * N + r, acc);
}

/* Row x of out's residual in x row m, or 0 past the task's rows (or
 * without a residual): loaded before the sum, so that its round trip to
 * L2 overlaps the input's instead of following the sum. */
__device__ __forceinline__ float matvec_res(const kparams &P, const mpkb_task *t, uint64_t m, uint64_t N, uint32_t x)
{
    if (!(t->flags & MPKB_F_EPI_RESIDUAL) || x >= (uint32_t)(t->matvec.hi - t->matvec.lo))
        return 0.0f;
    return ldx(P.tensors[t->matvec.residual].dtype, P.tp[t->matvec.residual], m * N + t->matvec.lo + x);
}

/* dot_bf16<false> of two rows a and b at once: both rows' loads are in
 * flight before either's sums (a streamed row is a memory round trip, and
 * a long task, the LM head's, is otherwise one a row); each row's sum is
 * dot_bf16's, in its order. */
__device__ __forceinline__ void dot2_bf16(const uint4 *a, const uint4 *b, const float *xs, uint32_t c0, uint32_t c1,
                                          uint32_t lane, float &ra, float &rb)
{
    float a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    uint32_t c = c0 + lane;
    for (; c + 96 < c1; c += 128) {
        uint4 u[4], v[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            u[j] = ld_stream(a + c + 32 * j);
#pragma unroll
        for (int j = 0; j < 4; j++)
            v[j] = ld_stream(b + c + 32 * j);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float4 *x = (const float4 *)(xs + 8 * (c + 32 * j));
            float4 p = x[0], q = x[1];
            fma8(u[j], p, q, a0, a1);
            fma8(v[j], p, q, b0, b1);
        }
    }
    for (; c < c1; c += 32) {
        uint4 u = ld_stream(a + c), v = ld_stream(b + c);
        const float4 *x = (const float4 *)(xs + 8 * c);
        float4 p = x[0], q = x[1];
        fma8(u, p, q, a0, a1);
        fma8(v, p, q, b0, b1);
    }
    ra = a0 + a1, rb = b0 + b1;
}

/* The end of item (row lo + item) of the M = 1 loop with S == 1: its
 * residual from the lane that loaded it (or loaded now), its epilogue. */
__device__ __forceinline__ void mv_finish(const kparams &P, const mpkb_task *t, uint64_t m, uint64_t N, uint32_t item,
                                          uint32_t warp, uint32_t lane, float acc, float res, float &best,
                                          int32_t &best_at)
{
    uint32_t j = (item - warp) / NW; /* the item's lane of res */
    float rv = __shfl_sync(0xffffffffu, res, j & 31);
    if (j >= 32)
        rv = matvec_res(P, t, m, N, item);
    if (lane == 0)
        matvec_row_done(P, t, m, N, (uint32_t)t->matvec.lo + item, acc, rv, best, best_at);
}

/* ---- M > 1: matvec_rows (the header comment) ---------------------------- */

/* What matvec_rows reads of its task and pass, in shared memory at sm[0]:
 * thread 0 writes it and the CTA reads it after a barrier, so that none
 * of it has to stay in a register across the FMA loop. */
typedef struct {
    const uint8_t *x, *pro;  /* x [M, K]; gamma [K] (rmsnorm) or b [M, K] (silu-mul) */
    const uint8_t *w, *ring; /* the task's first weight row; its first nst rows, in shared memory */
    const uint8_t *res;      /* the residual, or NULL */
    uint8_t *out;
    uint32_t xd, prd, od, rd; /* dtypes */
    uint32_t K, N, col, nst, flags, pro_ro;
    float eps;
    uint32_t rows, xrows, passes, nr; /* the task's R and M; its passes, nr along R */
    uint32_t r0, R, m0, M, stats;     /* the pass: weight rows r0.. of the task, x rows m0.. */
    uint32_t tc;                      /* the pass runs on tensor cores (mv_tc) */
    uint32_t k0, kn;                  /* the part of K a pass sums: all of it, or a matvec_part's */
    uint8_t *stage;                   /* mv_tc's stages: the slab, or the free ring slots */
    uint32_t scap;                    /* their bytes */
    mv_plan pl;
} mv_desc;
static_assert(sizeof(mv_desc) + 4 * MV_MB <= MV_HEAD, "the head holds the task and the rmsnorm factors");

/* 8 bytes of a weight row, streamed past L1. */
__device__ __forceinline__ uint2 mv_ldw8(const uint8_t *p)
{
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

__device__ __forceinline__ bool mv_float(uint32_t dt) { return dt == MPKB_BF16 || dt == MPKB_F16 || dt == MPKB_F32; }

__device__ __forceinline__ bool mv_aligned(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* A piece, 8 bytes of a row of x or b, as fp32: 4 elements of a 16-bit
 * dtype or 2 of f32. */
__device__ __forceinline__ void mv_cvt(uint2 u, uint32_t dt, float *v)
{
    if (dt == MPKB_F32) {
        v[0] = __uint_as_float(u.x), v[1] = __uint_as_float(u.y), v[2] = v[3] = 0;
    } else if (dt == MPKB_F16) {
        v[0] = __half2float(__ushort_as_half((unsigned short)u.x));
        v[1] = __half2float(__ushort_as_half((unsigned short)(u.x >> 16)));
        v[2] = __half2float(__ushort_as_half((unsigned short)u.y));
        v[3] = __half2float(__ushort_as_half((unsigned short)(u.y >> 16)));
    } else {
        v[0] = bf16lo(u.x), v[1] = bf16hi(u.x), v[2] = bf16lo(u.y), v[3] = bf16hi(u.y);
    }
}

/* The pieces a thread stages for one slab, raw until they are stored. */
typedef struct {
    uint2 x[MV_XI], b[MV_XI], w[MV_WI];
} mv_stage;

/* Where a thread's pieces go: slab row px of x (x row xm of the pass) and
 * pw of w; piece s of x is piece vx0 + s * vxs of the slab's row (a unit,
 * or half a unit for f32), of w unit vw0 + s * vws. In each block of 32
 * pieces, 8 slab rows x 4 pieces: a quarter warp stores 8 consecutive
 * float4s (or float2s two apart) of one unit, and a warp loads 32 bytes
 * of each of 8 rows. */
typedef struct {
    uint32_t px, xm, pw, vx0, vxs, vw0, vws;
    bool xst, xld, wst, wld;
} mv_place;

__device__ __forceinline__ mv_place mv_where(const mv_desc &d)
{
    const mv_plan &pl = d.pl;
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, vq = (lane >> 3) & 3;
    mv_place q;
    q.px = (warp & ((1u << pl.lpbx) - 1)) << 3 | (lane & 7);
    q.xm = (q.px & (pl.mtp - 1)) * MV_TM + (q.px >> pl.lmtp);
    q.xst = q.px < MV_TM * pl.mtp, q.xld = q.xst && q.xm < d.M;
    q.vx0 = (warp >> pl.lpbx) << 2 | vq, q.vxs = 4 * NW >> pl.lpbx;
    q.pw = (warp & ((1u << pl.lpbw) - 1)) << 3 | (lane & 7);
    q.wst = q.pw / MV_TR < pl.rt, q.wld = q.pw < d.R;
    q.vw0 = (warp >> pl.lpbw) << 2 | vq, q.vws = 4 * NW >> pl.lpbw;
    return q;
}

/* Slab k4.. (n4 units): this thread's pieces into registers. */
__device__ __forceinline__ void mv_load(const mv_desc &d, uint32_t k4, uint32_t n4, mv_stage &st)
{
    mv_place q = mv_where(d);
    bool x16 = dsize(d.xd) == 2, silu = (d.flags & MPKB_F_PRO_SILU_MUL) != 0;
    uint32_t np = x16 ? n4 : 2 * n4, p0 = x16 ? k4 : 2 * k4;
    uint64_t row = (uint64_t)(d.m0 + q.xm) * d.K * dsize(d.xd); /* b's rows are the same bytes */
#pragma unroll
    for (int s = 0; s < MV_XI; s++) {
        uint32_t v = q.vx0 + s * q.vxs;
        st.x[s] = st.b[s] = make_uint2(0, 0);
        if (q.xld && v < np) {
            uint64_t o = row + 8ull * (p0 + v);
            st.x[s] = __ldcg((const uint2 *)(d.x + o));
            if (silu)
                st.b[s] = __ldcg((const uint2 *)(d.pro + o));
        }
    }
    uint32_t r = d.r0 + q.pw;
    bool ring = r < d.nst;
    const uint8_t *wrow = (ring ? d.ring : d.w) + (uint64_t)r * d.K * 2;
#pragma unroll
    for (int s = 0; s < MV_WI; s++) {
        uint32_t v = q.vw0 + s * q.vws;
        st.w[s] = make_uint2(0, 0);
        if (q.wld && v < n4) {
            const uint8_t *a = wrow + 8ull * (k4 + v);
            st.w[s] = ring ? *(const uint2 *)a : mv_ldw8(a);
        }
    }
}

/* The staged pieces into the slab, fp32, x after its prologue (gamma is
 * read here, by its view's path). */
__device__ __forceinline__ void mv_store(const mv_desc &d, const float *rs, uint32_t k4, uint32_t n4,
                                         const mv_stage &st, float *slab)
{
    mv_place q = mv_where(d);
    const mv_plan &pl = d.pl;
    bool x16 = dsize(d.xd) == 2, rms = (d.flags & MPKB_F_PRO_RMSNORM) != 0;
    bool silu = (d.flags & MPKB_F_PRO_SILU_MUL) != 0;
    uint32_t np = x16 ? n4 : 2 * n4, p0 = x16 ? k4 : 2 * k4, ne = x16 ? 4 : 2;
    float rf = rms && q.xld ? rs[q.xm] : 0.0f;
    tview g = {d.pro, d.prd, d.pro_ro != 0};
#pragma unroll
    for (int s = 0; s < MV_XI; s++) {
        uint32_t v = q.vx0 + s * q.vxs;
        if (q.xst && v < np) {
            float a[4], b[4];
            mv_cvt(st.x[s], d.xd, a);
            if (silu && q.xld) {
                mv_cvt(st.b[s], d.prd, b);
#pragma unroll
                for (int e = 0; e < 4; e++)
                    a[e] = a[e] / (1.0f + expf(-a[e])) * b[e];
            } else if (rms && q.xld) {
                uint64_t k = (uint64_t)(p0 + v) * ne;
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (e < (int)ne)
                        a[e] = ldv(g, k + e) * (a[e] * rf);
            }
            float *p = slab + 4 * ((x16 ? v : v >> 1) * pl.xs + q.px);
            if (x16)
                *(float4 *)p = make_float4(a[0], a[1], a[2], a[3]);
            else
                *(float2 *)(p + 2 * (v & 1)) = make_float2(a[0], a[1]);
        }
    }
    float4 *ws4 = (float4 *)slab + pl.units * pl.xs;
#pragma unroll
    for (int s = 0; s < MV_WI; s++) {
        uint32_t v = q.vw0 + s * q.vws;
        if (q.wst && v < n4)
            ws4[v * pl.ws + (MV_TR + 1) * (q.pw / MV_TR) + q.pw % MV_TR] =
                make_float4(bf16lo(st.w[s].x), bf16hi(st.w[s].x), bf16lo(st.w[s].y), bf16hi(st.w[s].y));
    }
}

/* The dynamic shared memory (the kernel's sm), named here so that
 * mv_pass, a function of its own, knows what space it addresses. */
extern __shared__ float4 mv_smem[];

/* The pass that the mv_desc at sm[0] describes (all of K): slabs, the
 * tree, the epilogue; with stats, first the rmsnorm factor of each of its
 * x rows. Not inlined: inlined, it changed how ptxas allocates the
 * registers of the whole kernel, and spilled in attention and the worker
 * loop; as a call the kernel's other code, the M = 1 path with it,
 * compiles as before (the same spills, 48 bytes). */
__device__ __noinline__ void mv_pass(void)
{
    float *sm = (float *)mv_smem;
    const mv_desc &d = *(const mv_desc *)sm;
    float *rs = sm + sizeof(mv_desc) / 4, *slab = sm + MV_HEAD / 4; /* rs: [MV_MB] */
    uint32_t tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, K4 = d.K / 4;

    /* the tile this thread sums, if any (else g is past the groups): lane
     * pairs n, n ^ 1 differ in weight rows when rt is even (and share x),
     * n, n ^ 2 in x rows (and share w) */
    uint32_t T = d.pl.rt * d.pl.mt, g = tid / T, j = tid % T, rtj, mtj;
    if (d.pl.rt % 2 == 0)
        rtj = (j & 1) | ((j >> 1) / d.pl.mt) << 1, mtj = (j >> 1) % d.pl.mt;
    else
        rtj = j / d.pl.mt, mtj = j % d.pl.mt;

    mv_stage st;
    mv_load(d, 0, mv_min(d.pl.units, K4), st);
    if (d.stats) { /* a warp per x row, while slab 0 is on its way */
        for (uint32_t m = warp; m < d.M; m += NW) {
            uint32_t np = d.K * dsize(d.xd) / 8;
            const uint8_t *row = d.x + (uint64_t)(d.m0 + m) * d.K * dsize(d.xd);
            float ss = 0, a[4];
#pragma unroll 4
            for (uint32_t p = lane; p < np; p += 32) {
                mv_cvt(__ldcg((const uint2 *)(row + 8ull * p)), d.xd, a);
                ss += a[0] * a[0] + a[1] * a[1] + a[2] * a[2] + a[3] * a[3];
            }
            ss = warp_sum(ss);
            if (lane == 0)
                rs[m] = 1.0f / sqrtf(ss / (float)d.K + d.eps);
        }
    }

    float acc[MV_TR][MV_TM];
#pragma unroll
    for (int r = 0; r < MV_TR; r++)
#pragma unroll
        for (int i = 0; i < MV_TM; i++)
            acc[r][i] = 0;
    for (uint32_t k4 = 0; k4 < K4; k4 += d.pl.units) {
        uint32_t U = d.pl.units, n4 = mv_min(U, K4 - k4);
        __syncthreads(); /* the slab is free (and rs written) */
        mv_store(d, rs, k4, n4, st, slab);
        __syncthreads();
        if (k4 + U < K4)
            mv_load(d, k4 + U, mv_min(U, K4 - k4 - U), st);
        uint32_t G = d.pl.groups, xs = d.pl.xs, ws = d.pl.ws, mtp = d.pl.mtp;
        const float4 *xb = (const float4 *)slab + mtj, *wb = (const float4 *)slab + U * xs + (MV_TR + 1) * rtj;
        for (uint32_t v = g; v < n4; v += G) {
            const float4 *xp = xb + v * xs, *wp = wb + v * ws;
            float4 x[MV_TM];
#pragma unroll
            for (int i = 0; i < MV_TM; i++)
                x[i] = xp[i * mtp];
#pragma unroll
            for (int r = 0; r < MV_TR; r++) {
                float4 w = wp[r];
#pragma unroll
                for (int i = 0; i < MV_TM; i++) {
                    float a = acc[r][i];
                    a = fmaf(w.x, x[i].x, a);
                    a = fmaf(w.y, x[i].y, a);
                    a = fmaf(w.z, x[i].z, a);
                    a = fmaf(w.w, x[i].w, a);
                    acc[r][i] = a;
                }
            }
        }
    }

    /* the G copies of each tile: a tree, half of them adding the others' */
    float4 *red = (float4 *)slab;
    __syncthreads();
    for (uint32_t h = d.pl.groups; h > 1;) {
        uint32_t half = (h + 1) / 2, S = (h - half) * T;
        if (g >= half && g < h)
#pragma unroll
            for (int r = 0; r < MV_TR; r++)
                red[r * S + (g - half) * T + j] = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
        __syncthreads();
        if (g < h - half)
#pragma unroll
            for (int r = 0; r < MV_TR; r++) {
                float4 o = red[r * S + g * T + j];
                acc[r][0] += o.x, acc[r][1] += o.y, acc[r][2] += o.z, acc[r][3] += o.w;
            }
        __syncthreads();
        h = half;
    }

    /* the output tile [M][R] (rows padded by one), then along rows of out */
    uint32_t os = MV_TR * d.pl.rt + 1;
    if (g == 0)
#pragma unroll
        for (int r = 0; r < MV_TR; r++)
#pragma unroll
            for (int i = 0; i < MV_TM; i++) {
                uint32_t m = mtj * MV_TM + i, n = rtj * MV_TR + r;
                if (m < d.M && n < d.R)
                    slab[m * os + n] = acc[r][i];
            }
    __syncthreads();
    for (uint32_t e = tid; e < d.M * d.R; e += NT) {
        uint32_t m = e / d.R, n = e % d.R;
        uint64_t o = (uint64_t)(d.m0 + m) * d.N + d.col + d.r0 + n;
        float v = slab[m * os + n];
        if (d.res)
            v += ldx(d.rd, d.res, o);
        stx(d.od, d.out, o, v);
    }
}

/* ---- M > 1 on tensor cores: mv_tc (the header comment) ------------------ */

/* Two floats as bf16x2, e0 in the low half (the lower k). */
__device__ __forceinline__ uint32_t tc_pack(float e0, float e1)
{
    uint32_t d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(e1), "f"(e0));
    return d;
}

/* hi = bf16x2 of (e0, e1), lo = bf16x2 of what hi leaves: hi + lo holds
 * 16 of an f32's 24 mantissa bits, so w . hi + w . lo (exact products,
 * fp32 sums) is the fp32 product to about 2^-17 of x. */
__device__ __forceinline__ void tc_split(float e0, float e1, uint32_t &hi, uint32_t &lo)
{
    hi = tc_pack(e0, e1);
    lo = tc_pack(e0 - bf16lo(hi), e1 - bf16hi(hi));
}

/* Elements 8 t .. 8 t + 7 of a silu-mul slab row at p (x's bf16, b's 64
 * bytes on): silu(x) * b, fp32, into v[0..8). */
__device__ __forceinline__ void tc_silu8(const uint8_t *p, uint32_t t, float *v)
{
    uint4 a = *(const uint4 *)(p + 16 * t), b = *(const uint4 *)(p + 64 + 16 * t);
    uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float x0 = bf16lo(av[i]), x1 = bf16hi(av[i]);
        v[2 * i] = x0 / (1.0f + expf(-x0)) * bf16lo(bv[i]);
        v[2 * i + 1] = x1 / (1.0f + expf(-x1)) * bf16hi(bv[i]);
    }
}

/* Elements 8 t .. 8 t + 7 of a slab row at p (bf16 or f32), fp32, into v[0..8). */
__device__ __forceinline__ void tc_row8(const uint8_t *p, uint32_t t, bool x16, float *v)
{
    if (x16) {
        uint4 a = *(const uint4 *)(p + 16 * t);
        uint32_t av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
            v[2 * i] = bf16lo(av[i]), v[2 * i + 1] = bf16hi(av[i]);
    } else {
        float4 a = *(const float4 *)(p + 32 * t), b = *(const float4 *)(p + 32 * t + 16);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    }
}

__device__ __forceinline__ void tc_mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Elements 8 t .. 8 t + 7 of x rows m (v[0..8)) and m + 8 (v[8..16)),
 * fp32, times the lane's weights w: each pair as bf16 hi + lo (tc_split),
 * four MMAs. The A fragments take rows m, m + 8 in turn: elements (0,1)
 * (2,3) (4,5) (6,7) of 8 t... */
__device__ __forceinline__ void tc_mma_f32(float (&c)[4], const float *v, uint4 w)
{
    uint32_t ah[8], al[8];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        tc_split(v[2 * e], v[2 * e + 1], ah[2 * e], al[2 * e]);
        tc_split(v[8 + 2 * e], v[8 + 2 * e + 1], ah[2 * e + 1], al[2 * e + 1]);
    }
    tc_mma(c, ah[0], ah[1], ah[2], ah[3], w.x, w.y);
    tc_mma(c, ah[4], ah[5], ah[6], ah[7], w.z, w.w);
    tc_mma(c, al[0], al[1], al[2], al[3], w.x, w.y);
    tc_mma(c, al[4], al[5], al[6], al[7], w.z, w.w);
}

__device__ __forceinline__ void tc_wait(uint32_t pending)
{
    switch (pending) { /* an immediate operand: one case per stage count */
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    }
}

/* Slab s of the pass (K elements 32 s ..): its x rows and the weight rows
 * not in the ring into stage buffer b, 16 bytes a cp.async. */
__device__ __forceinline__ void tc_issue(const mv_desc &d, uint8_t *buf, uint32_t s, uint32_t first, uint32_t rest,
                                         bool x16, bool silu)
{
    uint32_t xr = tc_xr(x16, silu), k0 = d.k0 + s * TC_KS, es = x16 ? 2 : 4;
    /* 16-byte pieces of a row: 4 of bf16 x (then 4 of b with silu), 8 of f32 x */
    for (uint32_t i = threadIdx.x; i < d.M * 8; i += NT) {
        uint32_t r = i >> 3, q = i & 7;
        if (x16 && !silu && q >= 4)
            continue;
        const uint8_t *src = x16 && q >= 4 ? d.pro + ((uint64_t)(d.m0 + r) * d.K + k0) * 2 + 16 * (q - 4)
                                           : d.x + ((uint64_t)(d.m0 + r) * d.K + k0) * es + 16 * q;
        cp_async16(buf + r * xr + 16 * q, src);
    }
    uint8_t *wb = buf + (d.M + 15) / 16 * 16 * xr;
    for (uint32_t i = threadIdx.x; i < rest * 4; i += NT) {
        uint32_t r = i / 4, q = i % 4;
        cp_async16(wb + r * TC_WR + 16 * q, d.w + ((uint64_t)(first + r) * d.K + k0) * 2 + 16 * q);
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

/* The pass that the mv_desc at sm[0] describes, on tensor cores
 * (mma.sync m16n8k16, bf16 in, fp32 sums): x rows are the MMA's rows, the
 * weight rows its columns. A warp owns up to two 16 x 8 output tiles and
 * goes through all of K; K runs in slabs of 32 that cp.async brings into a
 * ring of stages (x, and the weight rows that are not in the ring slot;
 * those that are are read there). Within a slab of 32, lane (g, t) of a
 * tile reads elements 8 t .. 8 t + 7 of its rows, 16 or 32 bytes at once,
 * and the two MMAs take them as their k = 2 t, 2 t + 1, 2 t + 8, 2 t + 9:
 * a permutation of the slab's k, the same for x and w, so the sum is the
 * slab's. f32 x goes in as hi + lo (tc_split), two MMAs. */
__device__ __noinline__ void mv_tc(void)
{
    float *sm = (float *)mv_smem;
    const mv_desc &d = *(const mv_desc *)sm;
    uint8_t *stage0 = d.stage;
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    bool x16 = d.xd == MPKB_BF16, silu = (d.flags & MPKB_F_PRO_SILU_MUL) != 0;
    bool rms = (d.flags & MPKB_F_PRO_RMSNORM) != 0;
    uint32_t first = d.r0 > d.nst ? d.r0 : d.nst; /* the pass's first row not in the ring slot */
    uint32_t rest = d.r0 + d.R > first ? d.r0 + d.R - first : 0;
    uint32_t sb = tc_stage(d.M, rest, x16, silu), nslab = d.kn / TC_KS;
    uint32_t ns = mv_min(d.scap > MV_SLAB ? TC_STAGES_RING : TC_STAGES, d.scap / sb);
    uint32_t xr = tc_xr(x16, silu), MT = (d.M + 15) / 16, NTL = (d.R + 7) / 8;

    /* this warp's tiles: u = warp, warp + NW (MT x NTL <= 32) */
    float acc[2][4], ss[2][2] = {{0, 0}, {0, 0}}; /* ss: the squares of x rows m, m + 8 (rmsnorm) */
    const uint8_t *wrow[2];  /* a tile's weight row for this lane, in the ring slot, or NULL */
    uint32_t wslab[2], mi[2], ni[2];
    bool has[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        uint32_t u = warp + NW * j;
        has[j] = u < MT * NTL;
        mi[j] = has[j] ? u / NTL : 0, ni[j] = has[j] ? u % NTL : 0;
        uint32_t r = mv_min(ni[j] * 8 + g, d.R - 1) + d.r0; /* rows past R: another row, not stored */
        wrow[j] = r < d.nst ? d.ring + ((uint64_t)r * d.K + d.k0) * 2 + 16 * t : NULL;
        wslab[j] = r < d.nst ? 0 : MT * 16 * xr + (r - first) * TC_WR + 16 * t;
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[j][e] = 0;
    }

    for (uint32_t s = 0; s + 1 < ns; s++)
        if (s < nslab)
            tc_issue(d, stage0 + s * sb, s, first, rest, x16, silu);
        else
            asm volatile("cp.async.commit_group;" ::: "memory");
    for (uint32_t s = 0; s < nslab; s++) {
        tc_wait(ns - 2); /* slab s is in, this thread's part */
        __syncthreads(); /* and everyone's; the stage of slab s - 1 is free */
        if (s + ns - 1 < nslab)
            tc_issue(d, stage0 + ((s + ns - 1) % ns) * sb, s + ns - 1, first, rest, x16, silu);
        else
            asm volatile("cp.async.commit_group;" ::: "memory");
        const uint8_t *buf = stage0 + (s % ns) * sb;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            if (!has[j])
                continue;
            uint4 w = wrow[j] ? *(const uint4 *)(wrow[j] + s * TC_KS * 2) : *(const uint4 *)(buf + wslab[j]);
            uint32_t m = mi[j] * 16 + g;
            if (silu) {
                /* silu(x) * b in fp32, matvec_input's formula, then as f32 x */
                float v[16];
                tc_silu8(buf + m * xr, t, v);
                tc_silu8(buf + (m + 8) * xr, t, v + 8);
                tc_mma_f32(acc[j], v, w);
            } else if (rms) {
                /* rmsnorm: x * gamma here, the row's 1 / rms on the sums
                 * at the end (the squares summed meanwhile, of x) */
                float v[16], gm[8];
                tc_row8(buf + m * xr, t, x16, v);
                tc_row8(buf + (m + 8) * xr, t, x16, v + 8);
                uint64_t k = d.k0 + s * TC_KS + 8 * t;
#pragma unroll
                for (int e = 0; e < 8; e++)
                    gm[e] = d.pro_ro ? ldw(d.prd, d.pro, k + e) : ldx(d.prd, d.pro, k + e);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    ss[j][0] += v[e] * v[e], ss[j][1] += v[8 + e] * v[8 + e];
                    v[e] *= gm[e], v[8 + e] *= gm[e];
                }
                tc_mma_f32(acc[j], v, w);
            } else if (x16) { /* bf16 x: the MMA's A fragments as they are */
                uint4 p = *(const uint4 *)(buf + m * xr + 16 * t);
                uint4 q = *(const uint4 *)(buf + (m + 8) * xr + 16 * t);
                tc_mma(acc[j], p.x, q.x, p.y, q.y, w.x, w.y);
                tc_mma(acc[j], p.z, q.z, p.w, q.w, w.z, w.w);
            } else {
                float v[16];
                tc_row8(buf + m * xr, t, false, v);
                tc_row8(buf + (m + 8) * xr, t, false, v + 8);
                tc_mma_f32(acc[j], v, w);
            }
        }
    }
    tc_wait(0); /* the empty groups at the end */

    /* c0, c1: x row g, weight rows 2 t, 2 t + 1 of the tile; c2, c3: row g + 8 */
#pragma unroll
    for (int j = 0; j < 2; j++) {
        if (!has[j])
            continue;
        float r[2] = {1.0f, 1.0f}; /* rmsnorm: 1 / rms of rows g, g + 8, as matvec_input has it */
        if (rms)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float q = ss[j][h]; /* the four lanes t of a row hold its four eighths */
                q += __shfl_xor_sync(0xffffffffu, q, 1);
                q += __shfl_xor_sync(0xffffffffu, q, 2);
                r[h] = 1.0f / sqrtf(q / (float)d.K + d.eps);
            }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            uint32_t m = mi[j] * 16 + g + (e >= 2 ? 8 : 0), n = ni[j] * 8 + 2 * t + (e & 1);
            if (m < d.M && n < d.R) {
                uint64_t o = (uint64_t)(d.m0 + m) * d.N + d.col + d.r0 + n;
                float v = acc[j][e] * r[e >> 1];
                if (d.res)
                    v += ldx(d.rd, d.res, o);
                stx(d.od, d.out, o, v);
            }
        }
    }
}

/* Where mv_tc's stages go (MPK_TC_RING, mv_tc): the slab after the head;
 * or, when the task has nothing in the weight ring (s_ring.cur < 0, as a
 * matvec_part never has), the ring's slots, which stay free until the task
 * has signalled (one_task copies the next task's weights only then). */
#ifndef MPK_TC_RING
#define MPK_TC_RING 1 /* 0: the slab always; 1: the ring for matvec_part; 2: for matvec too */
#endif
/* matvec_rows reads a matvec_part through matvec's view: the slots and
 * the range they share are at the same places. A pass (R, M <= 64) fits
 * two stages in the slab, so a part always runs on tensor cores. */
static_assert(MPKB_SLOT(matvec, x) == MPKB_SLOT(matvec_part, x) && MPKB_SLOT(matvec, w) == MPKB_SLOT(matvec_part, w) &&
                  offsetof(mpkb_task, matvec.lo) == offsetof(mpkb_task, matvec_part.lo) &&
                  offsetof(mpkb_task, matvec.hi) == offsetof(mpkb_task, matvec_part.hi),
              "matvec and matvec_part share x, w, lo and hi");
static_assert(2 * (MV_MB * TC_XR32 + MV_RB * TC_WR) <= MV_SLAB, "two stages of the largest pass fit the slab");

__device__ __forceinline__ void mv_stages(const kparams &P, float *sm, bool part, uint8_t **at, uint32_t *cap)
{
    *at = (uint8_t *)(sm + MV_HEAD / 4), *cap = MV_SLAB;
#if MPK_RING
    bool free = s_ring.cur < 0 && s_ring.task[0] < 0 && s_ring.task[1] < 0; /* no copy in either */
    uint32_t ring = free ? 2 * P.ring_slot : 0; /* both slots, contiguous */
#else
    uint32_t ring = P.ring_slot; /* its one slot: matvec_stage fills it only for a matvec */
#endif
    if (ring > MV_SLAB && (MPK_TC_RING >= 2 || (MPK_TC_RING == 1 && part)))
        *at = (uint8_t *)ring_buf(P, sm, 0), *cap = ring;
}

/* M > 1 with bf16 rows (mv_fast) and x and the prologue's tensor in a
 * float dtype, 16-byte aligned (b of x's size); else false, and nothing
 * was done. part: t is a matvec_part, which sums its part of K (no
 * prologue, no ring copy) into its partials (no residual), on tensor cores
 * only (else false). */
__device__ bool matvec_rows(const kparams &P, const mpkb_task *t, float *sm, bool part)
{
    const mpkb_tensor *X = &P.tensors[t->matvec.x];
    uint32_t M = X->dims[0], K = X->dims[1], R = (uint32_t)(t->matvec.hi - t->matvec.lo);
    bool rms = !part && (t->flags & MPKB_F_PRO_RMSNORM) != 0, silu = !part && (t->flags & MPKB_F_PRO_SILU_MUL) != 0;
    const uint8_t *xp = P.tp[t->matvec.x];
    tview pro = {xp, X->dtype, false};
    if (rms || silu)
        pro = view(P, t->matvec.pro);
    if (!mv_fast(P, t) || !mv_float(X->dtype) || !mv_float(pro.dtype) || !mv_aligned(xp) || !mv_aligned(pro.p) ||
        (silu && dsize(pro.dtype) != dsize(X->dtype)) || (part && !(MPK_TC && tc_ok(0, X->dtype, X->dtype, K))))
        return false;
#if MPK_RING
    int32_t slot = s_ring.cur; /* -1: nothing was copied for this task */
    uint32_t nst = slot >= 0 ? s_ring.rows[slot] : 0;
    const uint8_t *ring = (const uint8_t *)ring_buf(P, sm, slot >= 0 ? (uint32_t)slot : 0);
    if (nst)
        while (!mbar_done(&s_ring.bar[slot], s_ring.cur_parity))
            ;
#else
    uint32_t nst = part ? 0 : mv_staged(P, t);
    const uint8_t *ring = (const uint8_t *)ring_buf(P, sm, 0);
    if (nst) {
        cp_async_wait_all();
        __syncthreads();
    }
#endif
    mv_desc &d = *(mv_desc *)sm;
    if (threadIdx.x == 0) {
        d.x = xp, d.xd = X->dtype, d.pro = pro.p, d.prd = pro.dtype, d.pro_ro = pro.ro;
        d.ring = ring, d.nst = nst, d.K = K, d.flags = part ? 0 : t->flags, d.eps = part ? 0.0f : t->matvec.eps;
        d.N = P.tensors[t->matvec.w].dims[0], d.col = (uint32_t)t->matvec.lo;
        d.w = P.tp[t->matvec.w] + (uint64_t)d.col * K * 2;
        d.res = NULL, d.rd = 0;
        if (part) {
            uint32_t np = (uint32_t)t->matvec_part.parts, p = (uint32_t)t->matvec_part.part;
            d.k0 = (uint32_t)mpkb_kcut(K, np, p), d.kn = (uint32_t)mpkb_kcut(K, np, p + 1) - d.k0;
            d.out = P.tp[t->matvec_part.partials] + (uint64_t)p * M * d.N * 4, d.od = MPKB_F32;
        } else {
            d.k0 = 0, d.kn = K;
            d.out = P.tp[t->matvec.out], d.od = P.tensors[t->matvec.out].dtype;
            if (t->flags & MPKB_F_EPI_RESIDUAL)
                d.res = P.tp[t->matvec.residual], d.rd = P.tensors[t->matvec.residual].dtype;
        }
        mv_stages(P, sm, part, &d.stage, &d.scap);
        d.rows = R, d.xrows = M, d.nr = (R + MV_RB - 1) / MV_RB;
        d.passes = (M + MV_MB - 1) / MV_MB * d.nr;
    }
    /* the passes, along R within along M; what they need is in d */
    for (uint32_t i = 0;; i++) {
        __syncthreads(); /* the last pass is done with d */
        if (threadIdx.x == 0 && i < d.passes) {
            uint32_t a = i / d.nr, b = i % d.nr, nm = d.passes / d.nr;
            d.m0 = mv_cut(d.xrows, nm, a), d.M = mv_cut(d.xrows, nm, a + 1) - d.m0;
            d.r0 = mv_cut(d.rows, d.nr, b), d.R = mv_cut(d.rows, d.nr, b + 1) - d.r0;
            d.stats = (d.flags & MPKB_F_PRO_RMSNORM) && b == 0;
            d.pl = mv_plan_of(d.R, d.M, d.K, dsize(d.xd) == 2);
            d.tc = MPK_TC && tc_ok(d.flags, d.xd, d.prd, d.K) &&
                   tc_stage(d.M, d.R, d.xd == MPKB_BF16, (d.flags & MPKB_F_PRO_SILU_MUL) != 0) * 2 <=
                       d.scap; /* two stages at least */
        }
        __syncthreads();
        if (i >= d.passes)
            return true;
        if (d.tc)
            mv_tc();
        else
            mv_pass(); /* never for a part: tc_stage of a pass (R, M <= 64) is under MV_SLAB / 2 */
    }
}

__device__ bool op_matvec(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task;
    const mpkb_tensor *X = &P.tensors[t->matvec.x], *W = &P.tensors[t->matvec.w];
    uint32_t M = X->dims[0], K = X->dims[1], N = W->dims[0];
    if (M > 1 && matvec_rows(P, t, sm, false))
        return true;
    uint32_t i0 = (uint32_t)t->matvec.lo, R = (uint32_t)(t->matvec.hi - t->matvec.lo);
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint8_t *wp = P.tp[t->matvec.w];
    float *xs = sm, *red = sm + mv_kpad(K);
#if MPK_RING
    int32_t slot = s_ring.cur; /* -1: nothing was copied for this task */
    uint32_t nstaged = slot >= 0 ? s_ring.rows[slot] : 0;
    const uint4 *staged = ring_buf(P, sm, slot >= 0 ? (uint32_t)slot : 0);
#else
    uint32_t nstaged = mv_staged(P, t);
    const uint4 *staged = ring_buf(P, sm, 0);
#endif
    bool fast = mv_fast(P, t);
    uint32_t chunks = fast ? K / 8 : K;
    /* rows fewer than warps: split each row's K among S warps */
    uint32_t S = 1;
    while (R * S * 2 <= NW && chunks / (S * 2) >= 32)
        S *= 2;
    for (uint32_t m = 0; m < M; m++) {
        /* the residual of the rows this thread finishes: with S == 1, lane
         * j of a warp that of its item warp + NW j (rows past 32 a warp
         * load it at the end), else thread x that of row x */
        float res = S == 1 ? matvec_res(P, t, m, N, warp + NW * lane) : matvec_res(P, t, m, N, threadIdx.x);
        matvec_input(P, t, m, K, xs);
        if (m == 0 && nstaged) {
#if MPK_RING
            while (!mbar_done(&s_ring.bar[slot], s_ring.cur_parity))
                ;
#else
            cp_async_wait_all();
            __syncthreads();
#endif
        }
        if (m == 0)
            trace_mark(P); /* the input and the staged weights are in place */
        float best = -INFINITY;
        int32_t best_at = t->matvec.lo;
        for (uint32_t item = warp; item < R * S; item += NW) {
            uint32_t r = i0 + item / S, s = item % S;
            uint32_t c0 = (uint32_t)((uint64_t)chunks * s / S), c1 = (uint32_t)((uint64_t)chunks * (s + 1) / S);
            float acc;
            float acc2 = 0;
            bool two = false; /* this item and the warp's next, both streamed */
            if (fast && r - i0 < nstaged) {
                acc = dot_bf16<true>(staged + (uint64_t)(r - i0) * (K / 8), xs, c0, c1, lane);
            } else if (fast) {
                const uint4 *wr = (const uint4 *)(wp + (uint64_t)r * K * 2);
                two = S == 1 && item + NW < R;
                if (two)
                    dot2_bf16(wr, wr + (uint64_t)NW * (K / 8), xs, c0, c1, lane, acc, acc2);
                else
                    acc = dot_bf16<false>(wr, xs, c0, c1, lane);
            } else {
                acc = 0;
                for (uint32_t k = c0 + lane; k < c1; k += 32)
                    acc += ldw(W->dtype, wp, (uint64_t)r * K + k) * xs[k];
            }
            acc = warp_sum(acc);
            if (S == 1) {
                mv_finish(P, t, m, N, item, warp, lane, acc, res, best, best_at);
                if (two) {
                    item += NW;
                    mv_finish(P, t, m, N, item, warp, lane, warp_sum(acc2), res, best, best_at);
                }
            } else if (lane == 0) {
                red[item] = acc;
            }
        }
        if (S > 1) {
            __syncthreads();
            if (threadIdx.x < R) {
                float acc = 0;
                for (uint32_t s = 0; s < S; s++)
                    acc += red[threadIdx.x * S + s];
                matvec_row_done(P, t, m, N, i0 + threadIdx.x, acc, res, best, best_at);
            }
        }
        if (t->flags & MPKB_F_EPI_ARGMAX) {
            block_argmax(best, best_at);
            if (threadIdx.x == 0) {
                float *pp = (float *)P.tp[t->matvec.partials];
                __stcg(pp + 2 * t->matvec.tile, best);
                __stcg((int32_t *)pp + 2 * t->matvec.tile + 1, best_at);
            }
        }
        __syncthreads(); /* xs and red are reused by the next row */
    }
    return true;
}

/* MATVEC_PART: on tensor cores with bf16 rows (matvec_rows), else a warp
 * an output over the part's K, fp32 (other dtypes, unaligned tensors). */
__host__ __device__ inline uint32_t smem_matvec_part(const mpkb_tensor *T, const mpkb_task *t, char *why, size_t n)
{
    (void)T, (void)t, (void)why, (void)n;
    return MV_HEAD + MV_SLAB;
}

__device__ bool op_matvec_part(const kparams &P, const mpkb_task *t, uint32_t step, uint32_t task, float *sm)
{
    (void)step, (void)task;
    const mpkb_tensor *X = &P.tensors[t->matvec_part.x], *W = &P.tensors[t->matvec_part.w];
    uint64_t M = X->dims[0], K = X->dims[1], N = W->dims[0], lo = (uint64_t)t->matvec_part.lo;
    uint64_t R = (uint64_t)t->matvec_part.hi - lo, p = (uint64_t)t->matvec_part.part;
    if (matvec_rows(P, t, sm, true))
        return true;
    uint64_t k0 = mpkb_kcut(K, (uint64_t)t->matvec_part.parts, p), k1 = mpkb_kcut(K, (uint64_t)t->matvec_part.parts, p + 1);
    tview x = view(P, t->matvec_part.x), w = view(P, t->matvec_part.w);
    float *out = (float *)P.tp[t->matvec_part.partials] + p * M * N;
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (uint64_t e = warp; e < M * R; e += NW) {
        uint64_t m = e / R, r = lo + e % R;
        float acc = 0;
        for (uint64_t k = k0 + lane; k < k1; k += 32)
            acc += ldv(x, m * K + k) * ldv(w, r * K + k);
        acc = warp_sum(acc);
        if (lane == 0)
            __stcg(out + m * N + r, acc);
    }
    return true;
}

#endif
