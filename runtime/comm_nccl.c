/*
 * comm_nccl.c — the side of the CUDA communicators that talks to NCCL, and the rank state
 * both CUDA worlds share (comm_cuda_world.c: ranks that are threads; comm_cuda_mpi.c: one
 * rank per process). Declarations in comm_cuda.h.
 *
 * When NCCL is used: it is built in and every rank of the world has its own GPU (threads:
 * the device numbers; MPI: host name + PCI bus id, allgathered) and there are several
 * ranks; MPL_NCCL=1 forces it (one rank included; ranks that share a GPU then fail with
 * NCCL's "Duplicate GPU"), MPL_NCCL=0 turns it off (under MPI rank 0's setting decides).
 *
 * Boot. The world's communicator: ncclCommInitRank (threads: one NCCL group over the GPUs;
 * MPI: rank 0's ncclGetUniqueId broadcast with MPI_Bcast). From it at init, by
 * ncclCommSplit (NCCL >= 2.18) with the world rank as key (so NCCL's rank order is
 * ascending world rank, the chunk order of comm.h): one communicator per tp and per dp
 * group, and a two-rank "link" per ordered pair of ranks that exchange messages (the mesh
 * says which pairs), each link with its own stream. Every new communicator is warmed up
 * (one element), so connections are made at init, in the same order everywhere. Groups
 * and pairs the mesh does not name take the worlds' fallbacks.
 *
 * Messages over a link. send stages the buffer on the sender's compute stream
 * (cudaMallocAsync and a copy), so the caller may reuse the buffer at once and compute
 * never waits for the peer; the link's stream waits for the copy (event), ncclSend's the
 * staging buffer and frees it after (cudaFreeAsync, in stream order). The world sends a
 * header (tag, size, "on the link") where host messages go; the receiver checks tag and
 * size before it posts ncclRecv, so a mismatch is an error, never a hang, and no recv is
 * posted before its send. recv: the link's stream waits for the compute stream (earlier
 * users of the buffer), ncclRecv's into the buffer, and compute waits for the link. A link
 * is one direction of one pair with its own communicator and stream: NCCL runs the
 * operations of one communicator in order and a send is "blocking for the GPU" until its
 * recv runs, so one shared communicator (or stream) would let a send hold up the other
 * pairs' messages — 1F1B's crossing sends deadlock that way once a message outgrows
 * NCCL's buffers.
 *
 * Collectives (device buffers, on the group's communicator) run on the rank's comm stream
 * after its compute stream's work, and compute waits for them: the f32 all-reduce is
 * ncclAllReduce; a reduce-scatter is ncclReduceScatter in place when k divides n, else one
 * ncclReduce per non-empty chunk to its owner, in one NCCL group; an all-gather is
 * ncclAllGather in place when k divides n, else one ncclBroadcast per non-empty chunk from
 * its owner, in one group. The sums are in NCCL's order. Before each, the member's NCCL
 * rank and the group's size are checked against its slot (a wrong communicator would put
 * chunks in the wrong places). Assumed, as everywhere NCCL is used so: kernels of
 * different communicators can be resident on a GPU together.
 *
 * Teardown: a rank's communicators are destroyed after its streams drain, or aborted
 * (ncclCommAbort) after a failure, which ends operations that wait for a rank that will
 * not come. Every CUDA and NCCL call is checked, with a message that names it.
 */
#include "exec.h"

#include <stdlib.h>
#include <string.h>

#ifdef MPL_HAVE_CUDA

#include "comm_cuda.h"

/* ---- a rank's side ---------------------------------------------------------------------- */

int mpl_cuda_stream_after(cudaStream_t waiter, cudaStream_t stream, cudaEvent_t mark, MplErr *err) {
  CUDA_CHECK(cudaEventRecord(mark, stream));
  CUDA_CHECK(cudaStreamWaitEvent(waiter, mark, 0));
  return MPL_OK;
}

int mpl_cuda_rank_init(CudaRank *cr, MplDevice *d, MplErr *err) {
  if (!d || d->ops != &mpl_device_cuda_ops || !d->impl) return mpl_errf(err, "cuda communicator: a rank is not on a cuda device");
  cr->dev = d;
  cr->gpu = d->index;
  mpl_cuda_streams(d, &cr->compute, &cr->comm);
  CUDA_CHECK(cudaSetDevice(cr->gpu));
  CUDA_CHECK(cudaEventCreateWithFlags(&cr->mark, cudaEventDisableTiming));
  return MPL_OK;
}

void mpl_cuda_rank_free(CudaRank *cr) {
  if (!cr->dev) return;
  CUDA_SOFT(cudaSetDevice(cr->gpu));
  if (cr->mark) CUDA_SOFT(cudaEventDestroy(cr->mark));
  cr->mark = NULL;
}

/* ---- the choice: MPL_NCCL ------------------------------------------------------------- */

int mpl_nccl_mode(int *mode, MplErr *err) {
  const char *s = getenv("MPL_NCCL");
  if (!s || !*s || !strcmp(s, "auto")) *mode = MPL_NCCL_AUTO;
  else if (!strcmp(s, "0")) *mode = MPL_NCCL_OFF;
  else if (!strcmp(s, "1")) *mode = MPL_NCCL_ON;
  else return mpl_errf(err, "MPL_NCCL must be 0, 1 or auto, not '%s'", s);
#ifndef MPL_HAVE_NCCL
  if (*mode == MPL_NCCL_ON)
    return mpl_errf(err, "MPL_NCCL=1, but this mplrun was built without NCCL (nccl.h and libnccl were not found)");
#endif
  return MPL_OK;
}

bool mpl_nccl_wanted(int mode, int size, bool distinct) {
#ifdef MPL_HAVE_NCCL
  return mode == MPL_NCCL_ON || (mode == MPL_NCCL_AUTO && size > 1 && distinct);
#else
  return false;
#endif
}

#ifdef MPL_HAVE_NCCL

int mpl_nccl_fail(MplErr *err, const char *call, ncclResult_t r, const char *file, int line) {
  const char *last = ncclGetLastError(NULL);
  bool more = last && *last;
  return mpl_errf(err, "NCCL: %s: %s%s%s (%s:%d)", call, ncclGetErrorString(r), more ? ": " : "", more ? last : "", file,
                  line);
}

int mpl_nccl_shared_gpu_hint(MplErr *err) {
  char msg[sizeof err->msg];
  snprintf(msg, sizeof msg, "%s", err->msg);
  return mpl_errf(err, "%s [MPL_NCCL=1 forces NCCL, but ranks share a GPU: NCCL needs one GPU per rank]", msg);
}

/* ---- messages over links ------------------------------------------------------------------ */
int mpl_nccl_link_send(CudaRank *me, NcclLink *l, const void *buf, size_t bytes, MplErr *err) {
  void *stage = NULL;
  CUDA_CHECK(cudaMallocAsync(&stage, bytes, me->compute));
  cudaError_t e = cudaMemcpyAsync(stage, buf, bytes, cudaMemcpyDeviceToDevice, me->compute);
  const char *what = "cudaMemcpyAsync (staging a message)";
  if (e == cudaSuccess && (e = cudaEventRecord(me->mark, me->compute)) != cudaSuccess) what = "cudaEventRecord";
  if (e == cudaSuccess && (e = cudaStreamWaitEvent(l->stream, me->mark, 0)) != cudaSuccess) what = "cudaStreamWaitEvent";
  if (e != cudaSuccess) {
    cudaGetLastError();
    CUDA_SOFT(cudaFreeAsync(stage, me->compute));
    return mpl_errf(err, "cuda: %s: %s", what, cudaGetErrorString(e));
  }
  ncclResult_t r = ncclSend(stage, bytes, ncclInt8, 1, l->comm, l->stream);
  e = cudaFreeAsync(stage, l->stream); /* after the send (or after the copy, if it failed) */
  if (r != ncclSuccess) return mpl_nccl_fail(err, "ncclSend", r, __FILE__, __LINE__);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return mpl_errf(err, "cuda: cudaFreeAsync (a sent message): %s", cudaGetErrorString(e));
  }
  return MPL_OK;
}

int mpl_nccl_link_recv(CudaRank *me, NcclLink *l, void *buf, size_t bytes, const atomic_int *stop, MplErr *err) {
  if (mpl_cuda_stream_after(l->stream, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  if (mpl_cuda_is_device_ptr(buf)) {
    NCCL_CHECK(ncclRecv(buf, bytes, ncclInt8, 0, l->comm, l->stream));
    return mpl_cuda_stream_after(me->compute, l->stream, me->mark, err);
  }
  void *tmp = NULL;
  CUDA_CHECK(cudaMallocAsync(&tmp, bytes, l->stream));
  ncclResult_t r = ncclRecv(tmp, bytes, ncclInt8, 0, l->comm, l->stream);
  int st = r == ncclSuccess ? mpl_cuda_wait(l->stream, NULL, stop, err) : mpl_nccl_fail(err, "ncclRecv", r, __FILE__, __LINE__);
  cudaError_t e = st == MPL_OK ? cudaMemcpy(buf, tmp, bytes, cudaMemcpyDeviceToHost) : cudaSuccess;
  if (e != cudaSuccess) {
    cudaGetLastError();
    st = mpl_errf(err, "cuda: cudaMemcpy (a received message to the host): %s", cudaGetErrorString(e));
  }
  CUDA_SOFT(cudaFreeAsync(tmp, l->stream));
  return st;
}

/* ---- collectives ---------------------------------------------------------------------------- */

ncclComm_t mpl_nccl_group(const CudaRank *me, const int *sorted, int k, int size) {
  if (k == size && me->world) return me->world;
  for (const NcclGroup *g = me->groups; g; g = g->next)
    if (g->k == k && memcmp(g->ranks, sorted, sizeof *sorted * (size_t)k) == 0) return g->comm;
  return NULL;
}

/* ncclGroupEnd after a loop of grouped calls: the first error of the calls, else its own. */
static ncclResult_t group_end(ncclResult_t r) {
  ncclResult_t e = ncclGroupEnd();
  return r != ncclSuccess ? r : e;
}

/* One ncclReduce per non-empty chunk to its owner (in place), in one NCCL group. */
static ncclResult_t reduce_chunks(float *buf, size_t n, int k, ncclComm_t comm, cudaStream_t s) {
  ncclResult_t r = ncclGroupStart();
  for (int i = 0; i < k && r == ncclSuccess; i++) {
    size_t lo, len;
    mpl_comm_chunk(n, k, i, &lo, &len);
    if (len) r = ncclReduce(buf + lo, buf + lo, len, ncclFloat, ncclSum, i, comm, s);
  }
  return r == ncclSuccess ? ncclGroupEnd() : group_end(r);
}

/* One ncclBroadcast per non-empty chunk from its owner (in place), in one NCCL group. */
static ncclResult_t broadcast_chunks(uint8_t *buf, size_t n, size_t elem, int k, ncclComm_t comm, cudaStream_t s) {
  ncclResult_t r = ncclGroupStart();
  for (int i = 0; i < k && r == ncclSuccess; i++) {
    size_t lo, len;
    mpl_comm_chunk(n, k, i, &lo, &len);
    if (len) r = ncclBroadcast(buf + lo * elem, buf + lo * elem, len * elem, ncclInt8, i, comm, s);
  }
  return r == ncclSuccess ? ncclGroupEnd() : group_end(r);
}

/* Queues op on stream s (see the file comment for which NCCL calls). */
static ncclResult_t queue_collective(ncclComm_t comm, int op, int k, int slot, void *buf, size_t n, size_t elem,
                                     cudaStream_t s) {
  bool even = n % (size_t)k == 0;
  size_t part = n / (size_t)k;
  switch (op) {
  case MPL_COLL_ALLREDUCE_F32: return ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, s);
  case MPL_COLL_REDUCE_SCATTER_F32: {
    float *f = buf;
    return even ? ncclReduceScatter(f, f + (size_t)slot * part, part, ncclFloat, ncclSum, comm, s) : reduce_chunks(f, n, k, comm, s);
  }
  case MPL_COLL_ALLGATHER: {
    uint8_t *b = buf;
    return even ? ncclAllGather(b + (size_t)slot * part * elem, b, part * elem, ncclInt8, comm, s)
                : broadcast_chunks(b, n, elem, k, comm, s);
  }
  default: return ncclInvalidArgument;
  }
}

int mpl_nccl_collective(CudaRank *me, ncclComm_t comm, int op, int k, int slot, void *buf, size_t n, size_t elem,
                        MplErr *err) {
  int nrank = -1, count = -1;
  NCCL_CHECK(ncclCommUserRank(comm, &nrank));
  NCCL_CHECK(ncclCommCount(comm, &count));
  if (nrank != slot || count != k)
    return mpl_errf(err, "NCCL: a %s's communicator has this member as rank %d of %d, not %d of %d", mpl_coll_name(op), nrank,
                    count, slot, k);
  if (n == 0 || k == 1) return MPL_OK;
  if (mpl_cuda_stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  ncclResult_t r = queue_collective(comm, op, k, slot, buf, n, elem, me->comm);
  if (r != ncclSuccess) return mpl_nccl_fail(err, mpl_coll_name(op), r, __FILE__, __LINE__);
  return mpl_cuda_stream_after(me->compute, me->comm, me->mark, err);
}

/* ---- boot: the world's communicator, the mesh's groups and links ---------------------------- */

#if HAVE_SPLIT
/* ORDER: exec.c's world_of — w = (replica * tp + tp index) * pp + pipeline rank. */
enum { PART_TP, PART_DP, PART_PIPE };

/* The group of world rank w in partition k, or -1 (then no rank of the partition has one:
 * it is not made). TP and DP are collective groups; PIPE the message group (activations,
 * gradients and tied params' sums pass between the pipeline ranks of one replica and tp
 * index; ZeRO-1 uses DP's reduce-scatter and all-gather). */
static int part_color(const MplCommMesh *m, int k, int w) {
  int pp = m->pp, tp = m->tp, p = w % pp, t = w / pp % tp, d = w / (pp * tp);
  switch (k) {
  case PART_TP: return tp > 1 ? d * pp + p : -1;
  case PART_DP: return m->dp > 1 ? t * pp + p : -1;
  case PART_PIPE: return pp > 1 ? d * tp + t : -1;
  default: return -1;
  }
}

typedef struct Pair {
  int a, b, round; /* a sends to b */
} Pair;

/* Every ordered pair of ranks in one pipeline message group, each given a round in which neither
 * of its ranks is in another pair, so that one ncclCommSplit per round makes the round's
 * links. Deterministic: every process computes the same list. */
static int plan_links(const MplCommMesh *m, int size, Pair **out, int *npairs, int *nrounds) {
  Pair *p = NULL;
  int n = 0, cap = 0;
  *out = NULL, *npairs = *nrounds = 0;
  for (int a = 0; a < size; a++) {
    int ca = part_color(m, PART_PIPE, a);
    for (int b = 0; ca >= 0 && b < size; b++) {
      if (b == a || part_color(m, PART_PIPE, b) != ca) continue;
      if (n == cap) {
        Pair *q = mpl_realloc(p, sizeof *p * (size_t)(cap = cap ? cap * 2 : 64));
        if (!q) return mpl_free(p), MPL_ERR;
        p = q;
      }
      p[n++] = (Pair){a, b, -1};
    }
  }
  int *busy = mpl_calloc((size_t)size + 1, sizeof *busy); /* round + 1 of a rank's last pair */
  if (!busy) return mpl_free(p), MPL_ERR;
  int left = n, r = 0;
  for (; left > 0; r++)
    for (int i = 0; i < n; i++)
      if (p[i].round < 0 && busy[p[i].a] != r + 1 && busy[p[i].b] != r + 1) {
        p[i].round = r;
        busy[p[i].a] = busy[p[i].b] = r + 1;
        left--;
      }
  mpl_free(busy);
  *out = p, *npairs = n, *nrounds = r;
  return MPL_OK;
}
#endif

static int boot_world(const NcclBoot *b, const ncclUniqueId *id, MplErr *err) {
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t r = ncclSuccess;
  for (int i = 0; i < b->n && r == ncclSuccess; i++) {
    if (cudaSetDevice(b->r[i]->gpu) != cudaSuccess) r = ncclUnhandledCudaError;
    else r = ncclCommInitRank(&b->r[i]->world, b->size, *id, b->w[i]);
  }
  if ((r = group_end(r)) != ncclSuccess) return mpl_nccl_fail(err, "ncclCommInitRank (the world's communicator)", r, __FILE__, __LINE__);
  return MPL_OK;
}

#if HAVE_SPLIT
/* One ncclCommSplit of the world: color[i] < 0 leaves rank i out (out[i] = NULL). */
static int boot_split(const NcclBoot *b, const int *color, const int *key, ncclComm_t *out, MplErr *err) {
  for (int i = 0; i < b->n; i++) out[i] = NULL;
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t r = ncclSuccess;
  for (int i = 0; i < b->n && r == ncclSuccess; i++) {
    if (cudaSetDevice(b->r[i]->gpu) != cudaSuccess) r = ncclUnhandledCudaError;
    else r = ncclCommSplit(b->r[i]->world, color[i] < 0 ? NCCL_SPLIT_NOCOLOR : color[i], key[i], &out[i], NULL);
  }
  if ((r = group_end(r)) != ncclSuccess) return mpl_nccl_fail(err, "ncclCommSplit", r, __FILE__, __LINE__);
  return MPL_OK;
}
#endif

enum { WARM_NONE, WARM_ALLREDUCE, WARM_SEND, WARM_RECV };

/* One element through each new communicator, in one group (one thread may drive both
 * ends of a link), then waits for it: connections are made now, not at the first step. */
static int boot_warm(const NcclBoot *b, const ncclComm_t *comm, const cudaStream_t *stream, const int *op, MplErr *err) {
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t r = ncclSuccess;
  for (int i = 0; i < b->n && r == ncclSuccess; i++) {
    char *s = b->r[i]->scratch;
    if (op[i] == WARM_NONE) continue;
    if (cudaSetDevice(b->r[i]->gpu) != cudaSuccess) r = ncclUnhandledCudaError;
    else if (op[i] == WARM_ALLREDUCE) r = ncclAllReduce(s, s, 1, ncclFloat, ncclSum, comm[i], stream[i]);
    else if (op[i] == WARM_SEND) r = ncclSend(s, 1, ncclInt8, 1, comm[i], stream[i]);
    else r = ncclRecv(s + 128, 1, ncclInt8, 0, comm[i], stream[i]);
  }
  if ((r = group_end(r)) != ncclSuccess)
    return mpl_nccl_fail(err, "the warm-up of a new communicator (ncclAllReduce / ncclSend / ncclRecv of one element)", r, __FILE__,
                     __LINE__);
  for (int i = 0; i < b->n; i++)
    if (op[i] != WARM_NONE) {
      CUDA_CHECK(cudaSetDevice(b->r[i]->gpu));
      CUDA_CHECK(cudaStreamSynchronize(stream[i]));
    }
  return MPL_OK;
}

#if HAVE_SPLIT
/* Per-rank scratch of the set-up steps below. */
typedef struct BootTmp {
  int *color, *key, *op, *peer;
  ncclComm_t *out;
  cudaStream_t *stream;
} BootTmp;

static int tmp_init(BootTmp *t, int n, MplErr *err) {
  t->color = mpl_calloc((size_t)n, sizeof(int));
  t->key = mpl_calloc((size_t)n, sizeof(int));
  t->op = mpl_calloc((size_t)n, sizeof(int));
  t->peer = mpl_calloc((size_t)n, sizeof(int));
  t->out = mpl_calloc((size_t)n, sizeof *t->out);
  t->stream = mpl_calloc((size_t)n, sizeof *t->stream);
  if (t->color && t->key && t->op && t->peer && t->out && t->stream) return MPL_OK;
  return mpl_errf(err, "out of memory");
}

static void tmp_free(BootTmp *t) {
  mpl_free(t->color), mpl_free(t->key), mpl_free(t->op), mpl_free(t->peer), mpl_free(t->out), mpl_free(t->stream);
}

/* Partition k's all-reduce groups: one split, each member's communicator kept with its
 * member list (also after an error, so that the teardown ends it), then the warm-up. */
static int boot_groups(const NcclBoot *b, BootTmp *t, int k, MplErr *err) {
  for (int i = 0; i < b->n; i++) t->color[i] = part_color(b->mesh, k, b->w[i]), t->key[i] = b->w[i];
  int st = boot_split(b, t->color, t->key, t->out, err);
  for (int i = 0; i < b->n; i++) {
    t->op[i] = WARM_NONE;
    if (!t->out[i]) continue;
    NcclGroup *g = mpl_calloc(1, sizeof *g);
    int *ranks = mpl_calloc((size_t)b->size, sizeof *ranks);
    if (!g || !ranks) {
      mpl_free(g), mpl_free(ranks);
      ncclCommAbort(t->out[i]);
      if (st == MPL_OK) st = mpl_errf(err, "out of memory");
      continue;
    }
    for (int w = 0; w < b->size; w++)
      if (part_color(b->mesh, k, w) == t->color[i]) ranks[g->k++] = w;
    g->ranks = ranks, g->comm = t->out[i];
    g->next = b->r[i]->groups;
    b->r[i]->groups = g;
    t->op[i] = WARM_ALLREDUCE, t->stream[i] = b->r[i]->comm;
  }
  return st == MPL_OK ? boot_warm(b, t->out, t->stream, t->op, err) : MPL_ERR;
}

/* The links of one round: one split (the sender is key 0), a stream per new link, the
 * warm-up send. */
static int boot_round(const NcclBoot *b, BootTmp *t, const Pair *p, int np, int round, MplErr *err) {
  for (int i = 0; i < b->n; i++) {
    t->color[i] = -1, t->key[i] = 0, t->peer[i] = -1, t->op[i] = WARM_NONE;
    for (int j = 0; j < np; j++)
      if (p[j].round == round && (p[j].a == b->w[i] || p[j].b == b->w[i])) {
        bool sender = p[j].a == b->w[i];
        t->color[i] = j, t->key[i] = sender ? 0 : 1, t->peer[i] = sender ? p[j].b : p[j].a;
        break;
      }
  }
  int st = boot_split(b, t->color, t->key, t->out, err);
  for (int i = 0; i < b->n; i++) /* kept first (also after an error), so that the teardown ends them */
    if (t->out[i]) (t->key[i] == 0 ? b->r[i]->to : b->r[i]->from)[t->peer[i]].comm = t->out[i];
  for (int i = 0; i < b->n && st == MPL_OK; i++) {
    if (!t->out[i]) continue;
    CudaRank *cr = b->r[i];
    NcclLink *l = &(t->key[i] == 0 ? cr->to : cr->from)[t->peer[i]];
    CUDA_CHECK(cudaSetDevice(cr->gpu));
    CUDA_CHECK(cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking));
    t->op[i] = t->key[i] == 0 ? WARM_SEND : WARM_RECV, t->stream[i] = l->stream;
  }
  return st == MPL_OK ? boot_warm(b, t->out, t->stream, t->op, err) : MPL_ERR;
}

/* The mesh's all-reduce groups and message links. */
static int boot_mesh(const NcclBoot *b, MplErr *err) {
  BootTmp t = {0};
  Pair *p = NULL;
  int np = 0, nrounds = 0, st = tmp_init(&t, b->n, err);
  for (int k = PART_TP; k <= PART_DP && st == MPL_OK; k++)
    if (part_color(b->mesh, k, 0) >= 0) st = boot_groups(b, &t, k, err);
  if (st == MPL_OK && plan_links(b->mesh, b->size, &p, &np, &nrounds) != MPL_OK) st = mpl_errf(err, "out of memory");
  for (int r = 0; r < nrounds && st == MPL_OK; r++) st = boot_round(b, &t, p, np, r, err);
  mpl_free(p);
  tmp_free(&t);
  return st;
}
#endif

int mpl_nccl_boot(const NcclBoot *b, const ncclUniqueId *id, MplErr *err) {
  for (int i = 0; i < b->n; i++) {
    CudaRank *cr = b->r[i];
    CUDA_CHECK(cudaSetDevice(cr->gpu));
    CUDA_CHECK(cudaMalloc(&cr->scratch, 256));
    CUDA_CHECK(cudaMemset(cr->scratch, 0, 256));
    cr->to = mpl_calloc((size_t)b->size, sizeof *cr->to);
    cr->from = mpl_calloc((size_t)b->size, sizeof *cr->from);
    if (!cr->to || !cr->from) return mpl_errf(err, "out of memory");
  }
  if (boot_world(b, id, err) != MPL_OK) return MPL_ERR;
  ncclComm_t *comm = mpl_calloc((size_t)b->n, sizeof *comm);
  cudaStream_t *stream = mpl_calloc((size_t)b->n, sizeof *stream);
  int *op = mpl_calloc((size_t)b->n, sizeof *op);
  int st = comm && stream && op ? MPL_OK : mpl_errf(err, "out of memory");
  for (int i = 0; i < b->n && st == MPL_OK; i++) comm[i] = b->r[i]->world, stream[i] = b->r[i]->comm, op[i] = WARM_ALLREDUCE;
  if (st == MPL_OK) st = boot_warm(b, comm, stream, op, err);
  mpl_free(comm), mpl_free(stream), mpl_free(op);
  const MplCommMesh *m = b->mesh;
  if (st != MPL_OK || !m || m->dp < 1 || m->tp < 1 || m->pp < 1 || m->dp * m->tp * m->pp != b->size) return st;
#if HAVE_SPLIT
  return boot_mesh(b, err);
#else
  return MPL_OK; /* no ncclCommSplit: groups and links take the fallback */
#endif
}

void mpl_nccl_quiesce(CudaRank *cr, int size) {
  CUDA_SOFT(cudaSetDevice(cr->gpu));
  CUDA_SOFT(cudaStreamSynchronize(cr->compute));
  CUDA_SOFT(cudaStreamSynchronize(cr->comm));
  for (int p = 0; cr->to && cr->from && p < size; p++) {
    if (cr->to[p].stream) CUDA_SOFT(cudaStreamSynchronize(cr->to[p].stream));
    if (cr->from[p].stream) CUDA_SOFT(cudaStreamSynchronize(cr->from[p].stream));
  }
}

static void nccl_end(ncclComm_t c, bool abort) {
  if (!c) return;
  if (abort) (void)ncclCommAbort(c);
  else (void)ncclCommDestroy(c);
}

void mpl_nccl_free_rank(CudaRank *cr, int size, bool abort) {
  if (!cr->dev) return;
  CUDA_SOFT(cudaSetDevice(cr->gpu));
  for (NcclGroup *g = cr->groups, *next; g; g = next) {
    next = g->next;
    nccl_end(g->comm, abort);
    mpl_free(g->ranks);
    mpl_free(g);
  }
  cr->groups = NULL;
  for (int p = 0; p < size; p++) {
    NcclLink *l[2] = {cr->to ? &cr->to[p] : NULL, cr->from ? &cr->from[p] : NULL};
    for (int k = 0; k < 2; k++) {
      if (!l[k]) continue;
      nccl_end(l[k]->comm, abort);
      if (l[k]->stream) CUDA_SOFT(cudaStreamDestroy(l[k]->stream));
    }
  }
  nccl_end(cr->world, abort);
  cr->world = NULL;
  mpl_free(cr->to), mpl_free(cr->from);
  cr->to = cr->from = NULL;
  if (cr->scratch) CUDA_SOFT(cudaFree(cr->scratch));
  cr->scratch = NULL;
}
#endif /* MPL_HAVE_NCCL */

#endif /* MPL_HAVE_CUDA */
