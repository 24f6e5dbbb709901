/*
 * device_cuda_graph.c — MPL_CUDA_GRAPHS=1: a cuda device's work launched as CUDA graphs
 * (issue 14, item 3: a GPT-2 step is some 700 launches, each a few microseconds of the
 * host's time and a gap on the GPU).
 *
 * How: once a run's first pass is over (a step, or a sampling pass: every kernel has been
 * loaded and every product's algorithm chosen by then), the operations the device queues
 * between two points where the host must meet the stream (a copy to or from the host, a
 * wait, an allocation or free, a module's load: each calls cudev_graph_flush first) are
 * captured from the compute stream (cudaStreamBeginCapture) instead of launched, and at that
 * point launched as one graph (a run of more than GRAPH_MAX_OPS operations in pieces). A
 * step of one rank is three or four such runs: the gradients' zeroing before the inputs'
 * copies, the passes up to the norm the host reads for clipping, the update; one more per
 * run-time check the host reads and, with several ranks, per message or collective. Each
 * run has a signature: a hash of its operations' kinds and shapes (kernels and their grids,
 * products and their sizes, copies' lengths), not of their pointers or scalars. An
 * executable graph is kept per signature (the least recently launched of GRAPH_CACHE
 * replaced): the next capture with its signature is written into it by cudaGraphExecUpdate
 * (the new step number that dropout's masks and the learning rate and bias corrections of
 * AdamW take), and a capture the update refuses, or a new signature, is instantiated.
 *
 * Invariants:
 *  - the same operations run in the same order on the same stream, with the same arguments,
 *    as without graphs: the same bits (test_cuda_jobs compares every param after training);
 *  - nothing inside a capture waits for the stream, touches host memory or allocates: the
 *    device's entry points that do call cudev_graph_flush first (device_cuda.c,
 *    device_cuda_progs.c's load_program and the cross-entropy's scratch);
 *  - graphs only where the device was asked for them (MplDevice.graphs: train.c's
 *    init_graphs, not under --trace or --profile) and MPL_PROFILE is off (it times each
 *    launch with events);
 *  - a communicator's messages and collectives do not pass through the device: the CUDA
 *    communicators call mpl_cuda_flush first, so they run between graphs, in program order;
 *  - the capture is relaxed (cudaStreamCaptureModeRelaxed): ranks that share a GPU are
 *    threads of one process, and another rank's thread may allocate, copy synchronously,
 *    load a module or instantiate a graph while this one captures (the global mode forbids
 *    such calls anywhere in the process during a capture); and the main thread may queue a
 *    copy between steps that the rank's thread's capture then ends;
 *  - a run that failed may leave a capture open: the communicators drop it (mpl_cuda_drop,
 *    its work never run) before they synchronize the device at their end, which is invalid
 *    while a stream of it captures;
 *  - cuBLAS has a workspace of its own from the device's start, graphs or not
 *    (device_cuda.c's setup_device): a captured product never allocates, and the products
 *    choose the same algorithms with graphs as without;
 *  - a run longer than GRAPH_MAX_OPS operations is captured and launched in pieces.
 */
#include "exec.h"

#ifdef MPL_HAVE_CUDA

#include <stdio.h>
#include <string.h>

#include "cuda_dev.h"

/* Operations in one graph at most: a long run is launched in pieces, so that the GPU starts on
 * the first while the host captures the next (a whole pass captured before anything runs
 * would leave the GPU idle for the capture's time, a few microseconds an operation). */
enum { GRAPH_MAX_OPS = 128 };

static uint64_t mix(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8) h = (h ^ (v & 0xff)) * 0x100000001b3ull; /* FNV-1a, a byte at a time */
  return h;
}

int cudev_graph_op(CudaDev *cd, uint64_t a, uint64_t b, uint64_t c, MplErr *err) {
  CudaGraphs *g = &cd->graphs;
  if (!g->on) return MPL_OK;
  if (g->capturing && g->nops == GRAPH_MAX_OPS && cudev_graph_flush(cd, err) != MPL_OK) return MPL_ERR;
  if (!g->capturing) {
    CUDA_CHECK(cudaStreamBeginCapture(cd->compute, cudaStreamCaptureModeRelaxed));
    g->capturing = true;
    g->sig = 0xcbf29ce484222325ull;
    g->nops = 0;
  }
  g->sig = mix(mix(mix(g->sig, a), b), c);
  g->nops++;
  return MPL_OK;
}

int cudev_graph_gemm(CudaDev *cd, uint64_t how, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
                     const void *C, float beta, MplErr *err) {
  uint64_t align = ((uintptr_t)A | (uintptr_t)B | (uintptr_t)C) & 255;
  return cudev_graph_op(cd, (how << 8) + GOP_GEMM, (uint64_t)M + ((uint64_t)N << 32) + ((uint64_t)K << 48),
                        align + ((uint64_t)(beta != 0) << 8), err);
}

/* A slot's claim to be kept: 0 free, 1 idle, 2 launched since the host last waited for the
 * stream (it may be running: it is neither updated nor, while another will do, replaced). */
static int slot_rank(const CudaGraphs *g, const CudaGraph *c) { return !c->exec ? 0 : c->used > g->waited ? 2 : 1; }

/* The idle cached graph of signature sig, or the slot to instantiate it in: a free one, else
 * the least recently launched idle one, else the least recently launched (its graph
 * destroyed: one still running is freed when it ends). */
static CudaGraph *graph_slot(CudaGraphs *g, uint64_t sig, int nops) {
  CudaGraph *lru = NULL;
  for (int i = 0; i < GRAPH_CACHE; i++) {
    CudaGraph *c = &g->cache[i];
    int r = slot_rank(g, c);
    if (r == 1 && c->sig == sig && c->nops == nops) return c;
    if (!lru || r < slot_rank(g, lru) || (r == slot_rank(g, lru) && c->used < lru->used)) lru = c;
  }
  if (lru->exec) CUDA_SOFT(cudaGraphExecDestroy(lru->exec));
  *lru = (CudaGraph){.sig = sig, .nops = nops};
  return lru;
}

void cudev_graph_waited(CudaDev *cd) { cd->graphs.waited = cd->graphs.tick; }

int cudev_graph_flush(CudaDev *cd, MplErr *err) {
  CudaGraphs *g = &cd->graphs;
  if (!g->capturing) return MPL_OK;
  g->capturing = false;
  cudaGraph_t graph = NULL;
  cudaError_t e = cudaStreamEndCapture(cd->compute, &graph);
  if (e != cudaSuccess || !graph) {
    cudaGetLastError();
    return mpl_errf(err, "cuda: MPL_CUDA_GRAPHS: capturing %d operations failed: %s (they did not run; run "
                    "without MPL_CUDA_GRAPHS)", g->nops, e != cudaSuccess ? cudaGetErrorString(e) : "no graph");
  }
  CudaGraph *c = graph_slot(g, g->sig, g->nops);
  if (c->exec) {
    cudaGraphExecUpdateResultInfo info;
    if (cudaGraphExecUpdate(c->exec, graph, &info) == cudaSuccess) {
      g->updated++;
    } else { /* (cuBLAS chose other kernels, say): a new one */
      cudaGetLastError();
      CUDA_SOFT(cudaGraphExecDestroy(c->exec));
      c->exec = NULL;
    }
  }
  if (!c->exec) {
    e = cudaGraphInstantiate(&c->exec, graph, 0);
    if (e != cudaSuccess) {
      cudaGetLastError();
      c->exec = NULL;
      CUDA_SOFT(cudaGraphDestroy(graph));
      return mpl_errf(err, "cuda: MPL_CUDA_GRAPHS: cannot instantiate a graph of %d operations: %s", g->nops,
                      cudaGetErrorString(e));
    }
    g->instantiated++;
  }
  CUDA_SOFT(cudaGraphDestroy(graph));
  c->used = ++g->tick;
  CUDA_CHECK(cudaGraphLaunch(c->exec, cd->compute));
  g->launches++;
  g->ops += g->nops;
  return MPL_OK;
}

void cudev_graph_step_done(CudaDev *cd) {
  CudaGraphs *g = &cd->graphs;
  if (!g->want || g->on) return;
  g->want = false;
  if (cd->prof.on) {
    fprintf(stderr, "mplrun: warning: MPL_CUDA_GRAPHS is off under MPL_PROFILE (which times each launch)\n");
    return;
  }
  g->on = true;
}

void cudev_graph_drop(CudaDev *cd) {
  CudaGraphs *g = &cd->graphs;
  if (!g->capturing) return;
  cudaGraph_t graph = NULL;
  CUDA_SOFT(cudaStreamEndCapture(cd->compute, &graph));
  if (graph) CUDA_SOFT(cudaGraphDestroy(graph));
  g->capturing = false;
}

void cudev_graph_free(CudaDev *cd) {
  CudaGraphs *g = &cd->graphs;
  cudev_graph_drop(cd);
  for (int i = 0; i < GRAPH_CACHE; i++)
    if (g->cache[i].exec) CUDA_SOFT(cudaGraphExecDestroy(g->cache[i].exec));
  if (g->on)
    fprintf(stderr, "MPL_CUDA_GRAPHS device %d (a rank's): %lld operations in %lld graph launches (%lld graphs "
            "instantiated, %lld updated)\n", cd->dev, (long long)g->ops, (long long)g->launches, (long long)g->instantiated,
            (long long)g->updated);
  *g = (CudaGraphs){0};
}

#endif
