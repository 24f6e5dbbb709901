/*
 * cuda_mock.h — a CUDA runtime, driver and cuBLAS on host memory (tests/unit/cuda_mock.c),
 * linked into test_cuda_mock instead of libcudart, so that the cuda device's real host code
 * (runtime/device_cuda.c, device_cuda_progs.c) runs on a machine without a GPU. NVRTC is
 * the real one; a module's PTX is kept, and a kernel launch runs a host-compiled copy of the
 * kernel (tests/unit/cuda_host.h) that the test registered under the kernel's name.
 *
 * Invariants: every call completes before it returns (a stream is an order, not a
 * queue), unless MPL_MOCK_DEFER=SEED (cuda_mock.c's deferred mode: a stream's work runs
 * when the host waits for it); calls may come from several threads (ranks), and kernels run one at a time; "device" memory is host memory that the mock tracks, so copies check their kind
 * against it and kernels can check that their pointers are the device's; a launch must
 * name a kernel whose `.entry NAME(` is in its module's PTX, with a 1-D grid, the block
 * size its host copy assumes and no dynamic shared memory, on a live stream.
 */
#ifndef MPL_TEST_CUDA_MOCK_H
#define MPL_TEST_CUDA_MOCK_H

#include <stdbool.h>
#include <stddef.h>

/* A host copy of a kernel: run decodes cuLaunchKernel's params with the kernel's own
 * parameter types and runs grid blocks of `threads` threads. */
typedef void (*MockRunFn)(void **params, unsigned grid, unsigned threads);
typedef struct MockKernel {
  const char *name;
  unsigned threads; /* the block size the kernel assumes, a launch with another fails; 0: any whole
                       number of warps (grid-stride kernels) */
  MockRunFn run;
  /* the parameters' sizes in bytes, 0 ended, which a captured launch copies (as the driver
     does); NULL: read from the module's `.entry NAME(` parameter list */
  const unsigned short *psize;
} MockKernel;

/* Registers n host kernels. ptx NULL: they serve any module whose PTX has their entries;
 * else only a module loaded from exactly this PTX (several builds of one program, e.g. the
 * fused attention's head sizes, share entry names). ptx is copied. */
void cuda_mock_add_kernels(const MockKernel *k, int n, const char *ptx);

/* Launches of the kernel `name` so far. */
long cuda_mock_launches(const char *name);

/* The next allocation (cudaMalloc, cudaMallocAsync) after `skip` more succeed fails with
 * cudaErrorMemoryAllocation; -1: none fails (the default). */
void cuda_mock_fail_alloc(int skip);
/* Device allocations, streams, events, modules and cuBLAS handles not freed yet. */
int cuda_mock_live(void);

/* For the host kernels: p (n bytes from it) lies in a live device allocation, else the
 * check fails (a kernel given a host pointer, or a freed one). Returns p. */
const void *cuda_mock_dev(const void *p, size_t n);

/* Stream capture and graphs (cudaStreamBeginCapture ... cudaGraphLaunch): a capture records
 * the kernels (their parameters copied), products, memsets and device copies queued on the
 * stream, and runs none; a graph launch runs its records in order. An executable graph's
 * update (cudaGraphExecUpdate) takes the new parameters where every record has the same
 * kind, kernel and sizes, else it is refused as the driver refuses a changed topology. Inside
 * a capture a wait for the stream, a copy touching host memory, an allocation or a free, an
 * event or a module's load fails the test: the device must end its capture first. */
typedef struct MockGraphStats {
  long captures, instantiated, updated, refused, launches;
  long nodes; /* records run by graph launches */
  long eager; /* kernels, products, memsets and device copies run at once (not captured) */
} MockGraphStats;
MockGraphStats cuda_mock_graph_stats(void);
/* The next `skip`-th graph update after this is refused (-1: none, the default). */
void cuda_mock_refuse_update(int skip);

/* The last cuBLAS product: the entry point, the handle's math mode and the compute type
 * (sgemm: CUBLAS_COMPUTE_32F), A's type and the batch. */
typedef struct MockGemm {
  const char *fn;
  int math_mode, compute, a_type, batch;
} MockGemm;
MockGemm cuda_mock_last_gemm(void);

/* ---- the runtime's programs as host kernels (cuda_mock_progs.c, cuda_mock_sdpa.c) ---- */

/* runtime/cuda/optim.cu, ce.cu and embed.cu: entry names unique, registered with ptx NULL */
extern const MockKernel cuda_mock_optim[], cuda_mock_ce[], cuda_mock_emb[];
extern const int cuda_mock_noptim, cuda_mock_nce, cuda_mock_nemb;

/* runtime/cuda/sdpa.cu, one build per head sizes and input type: registered with the PTX
 * that mpl_cuda_sdpa_compile gives for them */
typedef struct MockSdpaBuild {
  int hs, hv;
  bool in16;
  const MockKernel *k;
  int n; /* the CUDA-core kernels, then the tensor-core ones the build has */
} MockSdpaBuild;
extern const MockSdpaBuild cuda_mock_sdpa[];
extern const int cuda_mock_nsdpa;

#endif
