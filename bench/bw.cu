/*
 * bw.cu - how fast this GPU streams its own memory: the bandwidth limit that
 * make bench divides bytes per token by.
 *
 *   nvcc -O3 -gencode arch=compute_90a,code=sm_90a -o bw bench/bw.cu
 *   ./bw [GiB]           (default 4)
 *
 * Streaming read: a grid-stride kernel of 16-byte loads over a buffer of GiB
 * gibibytes (filled with non-zero hashed values first), every thread adding
 * what it loads into a register, each block writing its sum out, so nothing
 * can be optimised away. Several block sizes and unroll depths are tried,
 * each with as many blocks as fit on the GPU at once; each is run REPS times
 * after WARMUP runs, timed with CUDA events, and its median kept. The sums of
 * every configuration must be equal (every element read exactly once), else
 * the probe fails. Then a device-to-device cudaMemcpy of half the buffer,
 * counted as bytes read plus bytes written.
 *
 * GB/s here is 1e9 bytes per second. The last lines are key=value for
 * bench.sh:
 *   read_GBps=...     the best configuration's median streaming read
 *   read_config=...   threads x unroll x blocks of that configuration
 *   copy_GBps=...     the median device-to-device copy, read + write
 * Exit status 0, or 1 with a message on standard error.
 */
#include <cuda_runtime.h>

#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "bw: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                      \
                    cudaGetErrorString(e_));                                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

enum { WARMUP = 3, REPS = 15, COPY_REPS = 10 };

__device__ __forceinline__ uint32_t hash32(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x | 1u; /* never zero */
}

__global__ void fill_kernel(uint4 *p, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        uint64_t k = (uint64_t)i * 4;
        p[i] = make_uint4(hash32(k), hash32(k + 1), hash32(k + 2), hash32(k + 3));
    }
}

__device__ __forceinline__ unsigned long long fold(uint4 v)
{
    return (unsigned long long)v.x + v.y + v.z + v.w;
}

/* UNROLL independent 16-byte loads in flight per thread per iteration. */
template <int UNROLL>
__global__ void __launch_bounds__(1024) read_kernel(const uint4 *__restrict__ p, size_t n,
                                                    unsigned long long *out)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long acc = 0;
    for (; i + (UNROLL - 1) * stride < n; i += UNROLL * stride) {
        uint4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
            v[u] = __ldg(p + i + u * stride);
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
            acc += fold(v[u]);
    }
    for (; i < n; i += stride)
        acc += fold(__ldg(p + i));
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_down_sync(0xffffffffu, acc, o);
    __shared__ unsigned long long warp_sum[32];
    if ((threadIdx.x & 31) == 0)
        warp_sum[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned long long s = 0;
        for (unsigned w = 0; w < (blockDim.x + 31) / 32; w++)
            s += warp_sum[w];
        out[blockIdx.x] = s;
    }
}

typedef void (*read_fn)(const uint4 *, size_t, unsigned long long *);

struct config {
    int threads, unroll;
    read_fn fn;
};

static double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    double gib = 4.0;
    if (argc > 1) {
        char *end;
        gib = strtod(argv[1], &end);
        if (*end || !(gib >= 0.25 && gib <= 64)) {
            fprintf(stderr, "usage: bw [GiB]   (a buffer of 0.25 to 64 GiB; default 4)\n");
            return 2;
        }
    }
    int dev;
    CK(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    printf("bw: %s, sm_%d%d, %d SMs, %.1f GiB\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, (double)prop.totalGlobalMem / (1u << 30));

    size_t bytes = (size_t)(gib * (double)(1ull << 30)) & ~(size_t)4095;
    size_t n = bytes / sizeof(uint4);
    size_t copy_bytes = bytes / 2;
    uint4 *buf = NULL, *dst = NULL;
    CK(cudaMalloc(&buf, bytes));
    CK(cudaMalloc(&dst, copy_bytes));
    fill_kernel<<<prop.multiProcessorCount * 8, 256>>>(buf, n);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());

    const config configs[] = {
        {256, 1, read_kernel<1>},  {256, 4, read_kernel<4>},  {512, 1, read_kernel<1>},
        {512, 4, read_kernel<4>},  {1024, 1, read_kernel<1>}, {1024, 4, read_kernel<4>},
        {512, 8, read_kernel<8>},
    };
    int max_blocks = 0;
    for (const config &c : configs) {
        int per_sm = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, c.fn, c.threads, 0));
        max_blocks = std::max(max_blocks, per_sm * prop.multiProcessorCount);
    }
    unsigned long long *sums = NULL;
    CK(cudaMalloc(&sums, sizeof *sums * (size_t)max_blocks));
    std::vector<unsigned long long> host((size_t)max_blocks);
    cudaEvent_t start, stop;
    CK(cudaEventCreate(&start));
    CK(cudaEventCreate(&stop));

    double best = 0;
    char best_cfg[64] = "";
    unsigned long long checksum = 0;
    bool have_checksum = false;
    printf("bw: streaming read of %.2f GiB, median of %d runs after %d warm-up runs:\n",
           (double)bytes / (1ull << 30), REPS, WARMUP);
    for (const config &c : configs) {
        int per_sm = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, c.fn, c.threads, 0));
        if (per_sm < 1) {
            fprintf(stderr, "bw: %d threads x unroll %d: no block fits on an SM\n", c.threads,
                    c.unroll);
            return 1;
        }
        int blocks = per_sm * prop.multiProcessorCount;
        std::vector<double> ms;
        for (int r = 0; r < WARMUP + REPS; r++) {
            CK(cudaEventRecord(start));
            c.fn<<<blocks, c.threads>>>(buf, n, sums);
            CK(cudaGetLastError());
            CK(cudaEventRecord(stop));
            CK(cudaEventSynchronize(stop));
            float t;
            CK(cudaEventElapsedTime(&t, start, stop));
            if (r >= WARMUP)
                ms.push_back(t);
        }
        CK(cudaMemcpy(host.data(), sums, sizeof *sums * (size_t)blocks, cudaMemcpyDeviceToHost));
        unsigned long long s = 0;
        for (int b = 0; b < blocks; b++)
            s += host[(size_t)b];
        if (s == 0 || (have_checksum && s != checksum)) {
            fprintf(stderr, "bw: %d threads x unroll %d: sum %llu differs from %llu: not every "
                            "element was read once\n", c.threads, c.unroll, s, checksum);
            return 1;
        }
        checksum = s, have_checksum = true;
        double med = median(ms);
        double gbps = (double)bytes / (med * 1e-3) / 1e9;
        std::sort(ms.begin(), ms.end());
        printf("bw:   %4d threads x unroll %d x %4d blocks: %.3f ms (min %.3f, max %.3f) -> %7.1f GB/s\n",
               c.threads, c.unroll, blocks, med, ms.front(), ms.back(), gbps);
        if (gbps > best) {
            best = gbps;
            snprintf(best_cfg, sizeof best_cfg, "%dx%dx%d", c.threads, c.unroll, blocks);
        }
    }

    std::vector<double> cms;
    for (int r = 0; r < 2 + COPY_REPS; r++) {
        CK(cudaEventRecord(start));
        CK(cudaMemcpyAsync(dst, buf, copy_bytes, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(stop));
        CK(cudaEventSynchronize(stop));
        float t;
        CK(cudaEventElapsedTime(&t, start, stop));
        if (r >= 2)
            cms.push_back(t);
    }
    double cmed = median(cms);
    double copy = 2.0 * (double)copy_bytes / (cmed * 1e-3) / 1e9;
    printf("bw: device-to-device cudaMemcpy of %.2f GiB: %.3f ms -> %.1f GB/s (read + write)\n",
           (double)copy_bytes / (1ull << 30), cmed, copy);
    printf("bw: best streaming read %.1f GB/s (%s, threads x unroll x blocks)\n", best, best_cfg);

    CK(cudaEventDestroy(start));
    CK(cudaEventDestroy(stop));
    CK(cudaFree(sums));
    CK(cudaFree(dst));
    CK(cudaFree(buf));
    printf("read_GBps=%.1f\nread_config=%s\ncopy_GBps=%.1f\n", best, best_cfg, copy);
    return 0;
}
