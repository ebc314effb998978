// nccl_probe.cu: does the NCCL in use support NCCL's device API (2.28+)?
//
// One process drives N GPUs (all visible ones, or argv[1]). It checks, in order:
//   1. compile-time NCCL_VERSION_CODE vs runtime ncclGetVersion(); a runtime older than 2.28 has no
//      device API: it prints "nccl_probe: NCCL <ver> lacks the device API (needs 2.28+)" and exits 3.
//      A runtime older than the headers it was built with also exits 3: the device code inlines the
//      headers' struct layouts (ncclDevComm, ncclWindow_vidmem), which then need not match the library.
//   2. ncclCommInitAll, then per rank ncclMemAlloc (1 MiB data + 4 KiB counters), a symmetric window
//      (ncclCommWindowRegister with NCCL_WIN_COLL_SYMMETRIC) and ncclDevCommCreate asking for one LSA
//      barrier and nothing multicast. NCCL_NVLS_ENABLE=0 is forced before any NCCL call: NVLink
//      multicast stays off, and lsaMultimem is never requested.
//   3. One kernel per GPU, all launched before any is waited on:
//      round A: each rank writes its pattern into its own half A, then a hand-made barrier: a
//        system-scope release fetch_add on the counter of every LSA peer (ncclGetLsaPointer), then an
//        acquire spin on its own counter until it reaches N, with a 5 s %globaltimer timeout that
//        reports instead of hanging. Then it reads every peer's half A and counts mismatches.
//      round B: the same write/read check on half B, synchronised instead by NCCL's own
//        ncclLsaBarrierSession (which has no timeout).
//      The host polls the streams for 30 s; a kernel still running then is reported as a hang.
// Output: per rank the LSA team, the LSA pointers, mismatches and barrier times; then
// "nccl_probe: OK: N ranks, device API load/store and cross-GPU signals work" (exit 0), or a
// "nccl_probe: FAIL: ..." line naming the failing call, its error string, file and line (exit 1).
// Exit 2: bad argument.
//
// Build (no -rdc and no extra defines: every device-side NCCL function is inline in the headers;
// -std=c++17 because nccl_device pulls in libcu++ <cuda/atomic>):
//   nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a -Xcompiler -Wall -Werror all-warnings -I/usr/local/cuda/include tools/nccl_probe.cu -o /tmp/nccl_probe -lnccl
// Run on the GPU machine (libnccl.so.2 may come from the PyTorch wheel nvidia-nccl-cu*):
//   LD_LIBRARY_PATH="$(python3 -c 'import nvidia.nccl,os;print(os.path.dirname(nvidia.nccl.__file__))')/lib:$LD_LIBRARY_PATH" /tmp/nccl_probe [N]
// The binary is sm_90a only (H100/H200) and links CUDA 13.0's static cudart, so that machine's driver
// must be 580+ (else cudaGetDeviceCount fails: "driver version is insufficient"). NCCL_DEBUG=WARN (or
// INFO) makes NCCL say why a call failed.
//
// Seen so far (2026-11-24, the lent one-GPU H100, built there against its own NCCL 2.28.3 headers
// and library): with 1 rank, ncclDevCommCreate fails with "Communicator does not support symmetric
// memory!" (NCCL WARN, dev_runtime.cc:877), after "Symmetric VA size=80GB". A one-GPU communicator
// gets no symmetric memory, so the probe needs a machine of 2+ GPUs to say anything more.

#include <cuda_runtime.h>
#include <nccl.h>
#include <nccl_device.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 28, 0)
#error "nccl_probe needs NCCL 2.28+ headers (nccl_device.h)"
#endif

// Weak references: a pre-2.28 libnccl.so.2 lacks these symbols, and with a strong reference the
// program would die in the loader (or at the first call) before it could print the clear message.
extern "C" __attribute__((weak)) ncclResult_t ncclDevCommCreate(ncclComm_t, ncclDevCommRequirements_t const*, ncclDevComm_t*);
extern "C" __attribute__((weak)) ncclResult_t ncclDevCommDestroy(ncclComm_t, ncclDevComm_t const*);
extern "C" __attribute__((weak)) ncclResult_t ncclCommWindowRegister(ncclComm_t, void*, size_t, ncclWindow_t*, int);
extern "C" __attribute__((weak)) ncclResult_t ncclCommWindowDeregister(ncclComm_t, ncclWindow_t);

#define MAX_RANKS 16
#define THREADS 512
static const size_t kRegionBytes = 512 * 1024;              // half A at 0, half B after it
static const size_t kRegionA = 0, kRegionB = kRegionBytes;
static const size_t kCounterOffset = 2 * kRegionBytes;      // 4 KiB area, first word used
static const size_t kWindowBytes = kCounterOffset + 4096;   // multiple of NCCL_WIN_REQUIRED_ALIGNMENT
static const unsigned long long kSpinTimeoutNs = 5000000000ull;
static const double kHostWatchdogS = 30.0;

#define FAIL(...) do { printf("nccl_probe: FAIL: " __VA_ARGS__); fflush(stdout); exit(1); } while (0)
#define CUDA_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) \
    FAIL("%s: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__); } while (0)
#define NCCL_CHECK(call) do { ncclResult_t r_ = (call); if (r_ != ncclSuccess) \
    FAIL("%s: %s [%s] (%s:%d)\n", #call, ncclGetErrorString(r_), ncclGetLastError(NULL), __FILE__, __LINE__); } while (0)

struct ProbeResult {
  int rank, nRanks, lsaRank, lsaSize;
  unsigned long long lsaPtr[MAX_RANKS];  // ncclGetLsaPointer(win, 0, p) as this rank sees it
  int handOk;                            // 1: all arrivals seen; 0: timed out
  unsigned handCounter;                  // last value of our counter seen by the spin
  unsigned long long handNs;             // arrive..wait done (includes host launch skew)
  int ncclRan;                           // round B reached its end
  unsigned long long ncclNs;             // ncclLsaBarrierSession::sync time
  unsigned mismatchA[MAX_RANKS], mismatchB[MAX_RANKS];  // per LSA peer
};

// Word i of world rank r's pattern in round k; distinct across ranks for every i (odd multipliers).
__host__ __device__ static inline uint32_t patternWord(int rank, int round, uint32_t i) {
  return (i * 2654435761u) ^ ((uint32_t)(rank + 1) * 0x9E3779B9u) ^ ((uint32_t)(round + 1) * 0x85EBCA6Bu);
}

__device__ static inline unsigned long long globalTimerNs() {  // wall-clock ns, unlike clock64()
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Writes our pattern for `round` at `offset` through our own LSA alias (the same mapping peers read).
__device__ static void writeOwn(ncclWindow_t win, size_t offset, int me, int rank, int round) {
  uint32_t* dst = (uint32_t*)ncclGetLsaPointer(win, offset, me);
  for (uint32_t i = threadIdx.x; i < kRegionBytes / 4; i += blockDim.x) dst[i] = patternWord(rank, round, i);
}

// Reads every LSA peer's region at `offset` and adds the mismatches to counts[peer].
__device__ static void checkPeers(ncclDevComm const& dc, ncclWindow_t win, size_t offset, int round, unsigned* counts) {
  const ncclTeam lsa = ncclTeamLsa(dc);
  for (int p = 0; p < lsa.nRanks && p < MAX_RANKS; p++) {
    const uint32_t* src = (const uint32_t*)ncclGetLsaPointer(win, offset, p);
    const int peerWorld = ncclTeamRankToWorld(dc, lsa, p);
    unsigned bad = 0;
    for (uint32_t i = threadIdx.x; i < kRegionBytes / 4; i += blockDim.x) bad += src[i] != patternWord(peerWorld, round, i);
    if (bad) atomicAdd(&counts[p], bad);
  }
}

__global__ void __launch_bounds__(THREADS) probeKernel(ncclDevComm devComm, ncclWindow_t win, ProbeResult* out) {
  __shared__ int handOk;
  const ncclTeam lsa = ncclTeamLsa(devComm);
  const int me = lsa.rank, nPeers = lsa.nRanks;
  if (threadIdx.x == 0) {
    out->rank = devComm.rank; out->nRanks = devComm.nRanks; out->lsaRank = me; out->lsaSize = nPeers;
    for (int p = 0; p < nPeers && p < MAX_RANKS; p++) out->lsaPtr[p] = (uintptr_t)ncclGetLsaPointer(win, 0, p);
  }

  // Round A: hand-made barrier. The __syncthreads orders every thread's pattern stores before thread
  // 0's release; release/acquire at system scope (cuda::atomic_ref defaults, as NCCL's own LSA barrier
  // uses) because the peer is another GPU: device scope only orders against threads of one GPU.
  writeOwn(win, kRegionA, me, devComm.rank, 0);
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned long long t0 = globalTimerNs();
    for (int p = 0; p < nPeers; p++) {
      cuda::atomic_ref<uint32_t, cuda::thread_scope_system> c(*(uint32_t*)ncclGetLsaPointer(win, kCounterOffset, p));
      c.fetch_add(1u, cuda::memory_order_release);
    }
    cuda::atomic_ref<uint32_t, cuda::thread_scope_system> mine(*(uint32_t*)ncclGetLsaPointer(win, kCounterOffset, me));
    unsigned seen = 0;
    int ok = 0;
    for (;;) {
      seen = mine.load(cuda::memory_order_acquire);
      if (seen >= (unsigned)nPeers) { ok = 1; break; }
      if (globalTimerNs() - t0 > kSpinTimeoutNs) break;
      __nanosleep(100);
    }
    out->handOk = ok; out->handCounter = seen; out->handNs = globalTimerNs() - t0;
    handOk = ok;
  }
  __syncthreads();  // also carries thread 0's acquire to the whole block
  if (!handOk) return;  // uniform across the block; peers then hang in round B: the host watchdog says so
  checkPeers(devComm, win, kRegionA, 0, out->mismatchA);

  // Round B: NCCL's barrier. Half B is distinct from half A, so no peer can still be reading what
  // we overwrite. acq_rel: release our stores, acquire the peers'.
  {
    ncclLsaBarrierSession<ncclCoopCta> bar(ncclCoopCta(), devComm, ncclTeamTagLsa(), 0);
    writeOwn(win, kRegionB, me, devComm.rank, 1);
    const unsigned long long t1 = globalTimerNs();
    bar.sync(ncclCoopCta(), cuda::memory_order_acq_rel);
    if (threadIdx.x == 0) out->ncclNs = globalTimerNs() - t1;
    checkPeers(devComm, win, kRegionB, 1, out->mismatchB);
  }  // the session's destructor saves its epoch (a block-wide sync)
  if (threadIdx.x == 0) out->ncclRan = 1;
}

static double nowS() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void versionString(int v, char* buf, size_t n) {  // codes below 2.9 were X*1000+Y*100+Z
  if (v < 10000) snprintf(buf, n, "%d.%d.%d", v / 1000, (v % 1000) / 100, v % 100);
  else snprintf(buf, n, "%d.%d.%d", v / 10000, (v % 10000) / 100, v % 100);
}

int main(int argc, char** argv) {
  setenv("NCCL_NVLS_ENABLE", "0", 1);  // before any NCCL call: NVLink multicast must stay off
  setvbuf(stdout, NULL, _IOLBF, 0);

  int runtime = 0;
  char compiledStr[32], runtimeStr[32];
  NCCL_CHECK(ncclGetVersion(&runtime));
  versionString(NCCL_VERSION_CODE, compiledStr, sizeof compiledStr);
  versionString(runtime, runtimeStr, sizeof runtimeStr);
  printf("nccl_probe: NCCL compile-time %s (NCCL_VERSION_CODE %d), runtime %s (ncclGetVersion %d)\n",
         compiledStr, NCCL_VERSION_CODE, runtimeStr, runtime);
  if (runtime < NCCL_VERSION(2, 28, 0) || !ncclDevCommCreate || !ncclDevCommDestroy ||
      !ncclCommWindowRegister || !ncclCommWindowDeregister) {
    printf("nccl_probe: NCCL %s lacks the device API (needs 2.28+)\n", runtimeStr);
    return 3;
  }
  if (runtime < NCCL_VERSION_CODE) {
    printf("nccl_probe: NCCL %s is older than the %s headers this probe was built with; the device API's "
           "inlined structs may not match (rebuild against the library's own headers)\n", runtimeStr, compiledStr);
    return 3;
  }
  if (runtime / 100 != NCCL_VERSION_CODE / 100)
    printf("nccl_probe: WARNING: runtime %s is a newer minor than the %s headers; NCCL promises device-API "
           "compatibility only among 2.29+ builds, so a failure below may be that mismatch\n", runtimeStr, compiledStr);

  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count < 1) FAIL("no CUDA devices visible (%s:%d)\n", __FILE__, __LINE__);
  int n = count, badArg = argc > 2;
  if (argc == 2) {
    char* end = NULL;
    long v = strtol(argv[1], &end, 10);
    badArg = end == argv[1] || *end != '\0' || v < 1 || v > count;
    n = (int)v;
  }
  if (badArg) {
    printf("usage: nccl_probe [N]   (N = number of GPUs to use, 1..%d; default all)\n", count);
    return 2;
  }
  if (n > MAX_RANKS) { printf("nccl_probe: using the first %d of %d GPUs\n", MAX_RANKS, n); n = MAX_RANKS; }
  printf("nccl_probe: %d rank(s), NCCL_NVLS_ENABLE=0\n", n);

  int devs[MAX_RANKS];
  ncclComm_t comms[MAX_RANKS];
  void* bufs[MAX_RANKS];
  ncclWindow_t wins[MAX_RANKS];
  ncclDevComm devComms[MAX_RANKS];
  cudaStream_t streams[MAX_RANKS];
  ProbeResult* dres[MAX_RANKS];
  ProbeResult res[MAX_RANKS];
  for (int r = 0; r < n; r++) devs[r] = r;
  NCCL_CHECK(ncclCommInitAll(comms, n, devs));

  for (int r = 0; r < n; r++) {  // local allocations; ncclMemAlloc uses the current device
    CUDA_CHECK(cudaSetDevice(devs[r]));
    NCCL_CHECK(ncclMemAlloc(&bufs[r], kWindowBytes));
    CUDA_CHECK(cudaMemset(bufs[r], 0, kWindowBytes));  // counters must start at 0
    CUDA_CHECK(cudaStreamCreateWithFlags(&streams[r], cudaStreamNonBlocking));
    CUDA_CHECK(cudaMalloc((void**)&dres[r], sizeof(ProbeResult)));
    CUDA_CHECK(cudaMemset(dres[r], 0, sizeof(ProbeResult)));
  }
  // Window registration and dev-comm creation are collective: one thread driving every rank must group
  // them, or the first call would wait for peers that are never called.
  NCCL_CHECK(ncclGroupStart());
  for (int r = 0; r < n; r++) NCCL_CHECK(ncclCommWindowRegister(comms[r], bufs[r], kWindowBytes, &wins[r], NCCL_WIN_COLL_SYMMETRIC));
  NCCL_CHECK(ncclGroupEnd());
  for (int r = 0; r < n; r++)  // NCCL returns success with a NULL window when the comm lacks symmetric memory
    if (!wins[r]) FAIL("ncclCommWindowRegister gave rank %d a NULL window: no symmetric-memory support "
                       "(NCCL_CUMEM_ENABLE=0? no P2P?) (%s:%d)\n", r, __FILE__, __LINE__);

#ifdef NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER
  ncclDevCommRequirements reqs = NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER;  // 2.29+ headers: versioned struct
#else
  ncclDevCommRequirements reqs;  // 2.28 headers have no initializer: zero = no resources, no multimem
  memset(&reqs, 0, sizeof reqs);
#endif
  reqs.lsaBarrierCount = 1;  // one CTA per kernel uses barrier index 0
  reqs.lsaMultimem = false;  // never multicast
  memset(devComms, 0, sizeof devComms);
  NCCL_CHECK(ncclGroupStart());
  for (int r = 0; r < n; r++) NCCL_CHECK(ncclDevCommCreate(comms[r], &reqs, &devComms[r]));
  NCCL_CHECK(ncclGroupEnd());

  for (int r = 0; r < n; r++) {  // every memset done before any rank's kernel can add to a counter
    CUDA_CHECK(cudaSetDevice(devs[r]));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  for (int r = 0; r < n; r++) {  // launch all before waiting on any: the kernels wait on each other
    CUDA_CHECK(cudaSetDevice(devs[r]));
    probeKernel<<<1, THREADS, 0, streams[r]>>>(devComms[r], wins[r], dres[r]);
    CUDA_CHECK(cudaGetLastError());
  }

  // Watchdog instead of cudaStreamSynchronize: a rank stuck in NCCL's barrier must not hang the probe.
  int done[MAX_RANKS] = {0};
  const double deadline = nowS() + kHostWatchdogS;
  for (;;) {
    int pending = 0;
    for (int r = 0; r < n; r++) {
      if (done[r]) continue;
      cudaError_t e = cudaStreamQuery(streams[r]);
      if (e == cudaSuccess) done[r] = 1;
      else if (e == cudaErrorNotReady) pending++;
      else FAIL("probeKernel on rank %d: %s (%s:%d)\n", r, cudaGetErrorString(e), __FILE__, __LINE__);
    }
    if (!pending) break;
    if (nowS() > deadline) {
      printf("nccl_probe: FAIL: probeKernel still running after %.0f s on rank(s):", kHostWatchdogS);
      for (int r = 0; r < n; r++) if (!done[r]) printf(" %d", r);
      printf(" (cross-GPU barrier hang) (%s:%d)\n", __FILE__, __LINE__);
      fflush(stdout);
      _exit(1);  // skip teardown: it would block on the running kernels
    }
    usleep(1000);
  }

  int bad = 0;
  for (int r = 0; r < n; r++) {
    CUDA_CHECK(cudaSetDevice(devs[r]));
    CUDA_CHECK(cudaMemcpy(&res[r], dres[r], sizeof(ProbeResult), cudaMemcpyDeviceToHost));
    const ProbeResult* q = &res[r];
    unsigned mA = 0, mB = 0;
    printf("nccl_probe: rank %d (cuda dev %d): world %d/%d, ncclTeamLsa rank %d size %d, LSA pointers:",
           r, devs[r], q->rank, q->nRanks, q->lsaRank, q->lsaSize);
    for (int p = 0; p < q->lsaSize && p < MAX_RANKS; p++) {
      printf(" %d=%#llx", p, q->lsaPtr[p]);
      if (!q->lsaPtr[p]) bad = 1;
      mA += q->mismatchA[p]; mB += q->mismatchB[p];
    }
    printf("\n");
    printf("nccl_probe: rank %d: hand barrier %s (counter %u/%d, %.1f us incl. launch skew), "
           "ncclLsaBarrierSession %s (%.1f us), mismatches A %u B %u\n", r, q->handOk ? "ok" : "TIMED OUT",
           q->handCounter, q->lsaSize, q->handNs / 1e3, q->ncclRan ? "ok" : "not run", q->ncclNs / 1e3, mA, mB);
    for (int p = 0; p < q->lsaSize && p < MAX_RANKS; p++)
      if (q->mismatchA[p] || q->mismatchB[p])
        printf("nccl_probe: rank %d: peer %d: %u/%zu words wrong in A, %u in B\n", r, p, q->mismatchA[p],
               kRegionBytes / 4, q->mismatchB[p]);
    if (q->lsaSize != n) printf("nccl_probe: rank %d: LSA team has %d of %d ranks\n", r, q->lsaSize, n);
    if (q->rank != r || q->nRanks != n || q->lsaSize != n || !q->handOk || !q->ncclRan || mA || mB) bad = 1;
  }

  for (int r = 0; r < n; r++) {  // deregistration and dev-comm destruction are local in NCCL
    CUDA_CHECK(cudaSetDevice(devs[r]));
    NCCL_CHECK(ncclDevCommDestroy(comms[r], &devComms[r]));
    NCCL_CHECK(ncclCommWindowDeregister(comms[r], wins[r]));
    NCCL_CHECK(ncclMemFree(bufs[r]));
    CUDA_CHECK(cudaFree(dres[r]));
    CUDA_CHECK(cudaStreamDestroy(streams[r]));
  }
  NCCL_CHECK(ncclGroupStart());  // finalize is intra-node collective: grouped, then destroy is local
  for (int r = 0; r < n; r++) NCCL_CHECK(ncclCommFinalize(comms[r]));
  NCCL_CHECK(ncclGroupEnd());
  for (int r = 0; r < n; r++) NCCL_CHECK(ncclCommDestroy(comms[r]));

  if (bad) {
    printf("nccl_probe: FAIL: device API check failed on at least one rank (see lines above) (%s:%d)\n", __FILE__, __LINE__);
    return 1;
  }
  printf("nccl_probe: OK: %d ranks, device API load/store and cross-GPU signals work\n", n);
  return 0;
}
