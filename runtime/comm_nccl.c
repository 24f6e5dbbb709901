/*
 * comm_nccl.c — the communicator of ranks on CUDA devices, behind MplCommOps, in two
 * worlds: the ranks are threads of one process, each with its cuda MplDevice (several may
 * share a GPU: mpl_cuda_world_*); or, under mpirun, each process is one rank on its GPU,
 * over the process's MPI communicator (comm_mpi.c: mpl_cuda_mpi_init).
 *
 * Which way a device message or a device all-reduce goes:
 *  - NCCL, when it is built in and every rank of the world has its own GPU (threads: the
 *    device numbers; MPI: host name + PCI bus id, allgathered) and there are several ranks;
 *    MPL_NCCL=1 forces it (one rank included; ranks that share a GPU then fail with NCCL's
 *    "Duplicate GPU"), MPL_NCCL=0 turns it off (under MPI rank 0's setting decides). The
 *    world's communicator: ncclCommInitRank (threads: one NCCL group over the GPUs; MPI:
 *    rank 0's ncclGetUniqueId broadcast with MPI_Bcast). From it at init, by ncclCommSplit
 *    (NCCL >= 2.18): one communicator per tp and per dp all-reduce group, and a two-rank
 *    "link" per ordered pair of ranks that exchange messages (the mesh says which pairs),
 *    each link with its own stream. Every new communicator is warmed up (one element), so
 *    connections are made at init, in the same order everywhere. Groups and pairs the
 *    mesh does not name take the fallback;
 *  - the fallback. Threads: device copies (below), all-reduces summed on the host. MPI:
 *    device buffers staged through host memory and sent over MPI, all-reduces summed by
 *    comm_mpi.c (ascending rank order: the threads' bits).
 *
 * NCCL messages. send stages the buffer on the sender's compute stream (cudaMallocAsync
 * and a copy), so the caller may reuse the buffer at once and compute never waits for
 * the peer; the link's stream waits for the copy (event), ncclSend's the staging buffer
 * and frees it after (cudaFreeAsync, in stream order). Then a header (tag, size, "on the
 * link") goes where host messages go (the threads' FIFO, or MPI): the receiver checks tag
 * and size before it posts ncclRecv, so a mismatch is an error, never a hang, and no recv
 * is posted before its send. recv: the link's stream waits for the compute stream (earlier
 * users of the buffer), ncclRecv's into the buffer, and compute waits for the link. A link
 * is one direction of one pair with its own communicator and stream: NCCL runs the
 * operations of one communicator in order and a send is "blocking for the GPU" until its
 * recv runs, so one shared communicator (or stream) would let a send hold up the other
 * pairs' messages — 1F1B's crossing sends deadlock that way once a message outgrows NCCL's
 * buffers. NCCL all-reduces run on the rank's comm stream after compute; compute waits
 * for them. Assumed, as everywhere NCCL is used so: kernels of different communicators
 * can be resident on a GPU together.
 *
 * Device-copy messages (threads, no link), eager like the in-process communicator's:
 *  - send of a device buffer: the sender's comm stream waits for its compute stream, a
 *    staging buffer is taken from the stream-ordered pool and filled on the comm stream,
 *    an event marks it ready, and the compute stream waits for that copy only (so the
 *    planned buffer may be reused at once). The message is queued (src, dst) FIFO;
 *  - recv of a device buffer: the receiver's comm stream waits for its compute stream
 *    (earlier readers of the buffer) and the message's event, copies (cudaMemcpyPeerAsync
 *    across GPUs), and the compute stream waits for the copy. The staging buffer goes
 *    back to the sender with an event, and the sender frees it on its own comm stream;
 *  - host buffers (gradient norms) travel as host bytes; mixed pairs (device to host and
 *    back) copy synchronously;
 *  - tags and sizes must match the FIFO's head, else the world aborts (no hang).
 * The threads' all-reduce without NCCL: every member's buffer to every other, summed in
 * ascending rank order on the host (the same bits on every member).
 *
 * Failure. Threads: abort wakes every blocked recv and raises a stop flag that every host
 * wait for GPU work watches once NCCL is in use (mpl_cuda_wait: that work may wait for a
 * rank that failed); the world's free then aborts its NCCL communicators (ncclCommAbort)
 * instead of destroying them. MPI: abort is MPI_Abort (comm_mpi.c); the free of a
 * communicator that saw an error aborts its NCCL communicators instead of waiting.
 * Every CUDA, NCCL and MPI call is checked, with a message that names it.
 */
#include "exec.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MPL_HAVE_CUDA

#include "cuda_rt.h"
#ifdef MPL_HAVE_NCCL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes" /* nccl.h declares f() */
#include <nccl.h>
#pragma GCC diagnostic pop

/* NCCL's message for r, with its last error's detail ("Duplicate GPU detected ..."). */
static int nccl_fail(MplErr *err, const char *call, ncclResult_t r, const char *file, int line) {
  const char *last = ncclGetLastError(NULL);
  bool more = last && *last;
  return mpl_errf(err, "NCCL: %s: %s%s%s (%s:%d)", call, ncclGetErrorString(r), more ? ": " : "", more ? last : "", file,
                  line);
}
#define NCCL_CHECK(call)                                                         \
  do {                                                                           \
    ncclResult_t n_ = (call);                                                    \
    if (n_ != ncclSuccess) return nccl_fail(err, #call, n_, __FILE__, __LINE__); \
  } while (0)
#define HAVE_SPLIT (NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0))
#endif

#define TAG_ALLREDUCE (7ull << 60)

/* ---- the choice: MPL_NCCL ------------------------------------------------------------- */

enum { NCCL_OFF = 0, NCCL_ON = 1, NCCL_AUTO = 2 };

/* MPL_NCCL: unset, "" or "auto": NCCL where it fits; "1": always; "0": never. */
static int nccl_mode(int *mode, MplErr *err) {
  const char *s = getenv("MPL_NCCL");
  if (!s || !*s || !strcmp(s, "auto")) *mode = NCCL_AUTO;
  else if (!strcmp(s, "0")) *mode = NCCL_OFF;
  else if (!strcmp(s, "1")) *mode = NCCL_ON;
  else return mpl_errf(err, "MPL_NCCL must be 0, 1 or auto, not '%s'", s);
#ifndef MPL_HAVE_NCCL
  if (*mode == NCCL_ON)
    return mpl_errf(err, "MPL_NCCL=1, but this mplrun was built without NCCL (nccl.h and libnccl were not found)");
#endif
  return MPL_OK;
}

static bool nccl_wanted(int mode, int size, bool distinct) {
#ifdef MPL_HAVE_NCCL
  return mode == NCCL_ON || (mode == NCCL_AUTO && size > 1 && distinct);
#else
  return false;
#endif
}

/* ---- a rank's side ------------------------------------------------------------------------ */

typedef struct CMsg {
  struct CMsg *next;
  uint64_t tag;
  size_t bytes;
  void *dbuf;            /* device message: staging on device `dev`, ready after `ready` */
  int dev;
  cudaEvent_t ready;
  uint8_t *hbuf;         /* host message */
  bool linked;           /* NCCL message: the payload comes over the link */
} CMsg;

typedef struct CQueue {
  CMsg *head, *tail;
} CQueue;

/* A staging buffer the receiver is done with (after `done`), to be freed by its sender. */
typedef struct Spent {
  struct Spent *next;
  void *dbuf;
  cudaEvent_t done;
} Spent;

#ifdef MPL_HAVE_NCCL
/* One direction of one pair: a two-rank communicator (the sender is its rank 0) and the
 * stream its operations run on, on this rank's GPU. */
typedef struct NcclLink {
  ncclComm_t comm;
  cudaStream_t stream;
} NcclLink;

/* An all-reduce group's communicator; ranks: its world ranks, ascending. */
typedef struct NcclGroup {
  struct NcclGroup *next;
  int k;
  int *ranks;
  ncclComm_t comm;
} NcclGroup;
#endif

typedef struct CRank {
  MplDevice *dev;
  int gpu;
  cudaStream_t compute, comm;
  cudaEvent_t mark;      /* re-recorded: "this stream has reached here" */
  Spent *spent;          /* guarded by the world mutex */
  uint64_t ar_seq;       /* all-reduce sequence number */
#ifdef MPL_HAVE_NCCL
  void *scratch;         /* 256 bytes of device memory: the warm-ups */
  ncclComm_t world;
  NcclLink *to, *from;   /* [size]: the links to and from each rank (comm NULL: none) */
  NcclGroup *groups;
#endif
} CRank;

struct MplCudaWorld {
  int size;
  pthread_mutex_t mu;
  pthread_cond_t *cond;  /* [size] recv of rank r waits on cond[r] */
  CQueue *queues;        /* [src * size + dst] */
  CRank *ranks;
  MplComm *comms;
  bool aborted;
  atomic_int stop;       /* raised with aborted; the GPU waits watch it when NCCL is in use */
  char why[256];
  bool use_nccl;
};

static MplCudaWorld *world_of(MplComm *c) { return c->impl; }


/* Makes `waiter` wait for everything queued on `stream` so far. */
static int stream_after(cudaStream_t waiter, cudaStream_t stream, cudaEvent_t mark, MplErr *err) {
  CUDA_CHECK(cudaEventRecord(mark, stream));
  CUDA_CHECK(cudaStreamWaitEvent(waiter, mark, 0));
  return MPL_OK;
}

static int init_rank(CRank *cr, MplDevice *d, MplErr *err) {
  if (!d || d->ops != &mpl_device_cuda_ops || !d->impl) return mpl_errf(err, "cuda communicator: a rank is not on a cuda device");
  cr->dev = d;
  cr->gpu = d->index;
  mpl_cuda_streams(d, &cr->compute, &cr->comm);
  CUDA_CHECK(cudaSetDevice(cr->gpu));
  CUDA_CHECK(cudaEventCreateWithFlags(&cr->mark, cudaEventDisableTiming));
  return MPL_OK;
}

#ifdef MPL_HAVE_NCCL
/* ---- NCCL: messages and all-reduces ----------------------------------------------------- */

/* A device buffer over link l (this rank is its sender); see the file comment. */
static int link_send(CRank *me, NcclLink *l, const void *buf, size_t bytes, MplErr *err) {
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
  if (r != ncclSuccess) return nccl_fail(err, "ncclSend", r, __FILE__, __LINE__);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return mpl_errf(err, "cuda: cudaFreeAsync (a sent message): %s", cudaGetErrorString(e));
  }
  return MPL_OK;
}

/* A message over link l (this rank is its receiver) into buf; a host buf goes through a
 * device buffer, waited for with the stop flag (NULL under MPI). */
static int link_recv(CRank *me, NcclLink *l, void *buf, size_t bytes, const atomic_int *stop, MplErr *err) {
  if (stream_after(l->stream, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  if (mpl_cuda_is_device_ptr(buf)) {
    NCCL_CHECK(ncclRecv(buf, bytes, ncclInt8, 0, l->comm, l->stream));
    return stream_after(me->compute, l->stream, me->mark, err);
  }
  void *tmp = NULL;
  CUDA_CHECK(cudaMallocAsync(&tmp, bytes, l->stream));
  ncclResult_t r = ncclRecv(tmp, bytes, ncclInt8, 0, l->comm, l->stream);
  int st = r == ncclSuccess ? mpl_cuda_wait(l->stream, NULL, stop, err) : nccl_fail(err, "ncclRecv", r, __FILE__, __LINE__);
  cudaError_t e = st == MPL_OK ? cudaMemcpy(buf, tmp, bytes, cudaMemcpyDeviceToHost) : cudaSuccess;
  if (e != cudaSuccess) {
    cudaGetLastError();
    st = mpl_errf(err, "cuda: cudaMemcpy (a received message to the host): %s", cudaGetErrorString(e));
  }
  CUDA_SOFT(cudaFreeAsync(tmp, l->stream));
  return st;
}

/* ncclAllReduce (sum, in place) on the rank's comm stream, between its compute's work. */
static int nccl_allreduce(CRank *me, ncclComm_t comm, float *buf, size_t n, MplErr *err) {
  if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, me->comm));
  return stream_after(me->compute, me->comm, me->mark, err);
}

/* The communicator of the group with these sorted members, or NULL (not made at init). */
static ncclComm_t group_comm(const CRank *me, const int *sorted, int k, int size) {
  if (k == size && me->world) return me->world;
  for (const NcclGroup *g = me->groups; g; g = g->next)
    if (g->k == k && memcmp(g->ranks, sorted, sizeof *sorted * (size_t)k) == 0) return g->comm;
  return NULL;
}

/* ---- NCCL: the mesh's groups and links ------------------------------------------------- */

#if HAVE_SPLIT
/* ORDER: exec.c's world_of — w = (replica * tp + tp index) * pp + pipeline rank. */
enum { PART_TP, PART_DP, PART_PIPE, PART_ZERO };

/* The group of world rank w in partition k, or -1 (then no rank of the partition has one:
 * it is not made). TP and DP are all-reduce groups; PIPE and ZERO message groups. */
static int part_color(const MplCommMesh *m, int k, int w) {
  int pp = m->pp, tp = m->tp, p = w % pp, t = w / pp % tp, d = w / (pp * tp);
  switch (k) {
  case PART_TP: return tp > 1 ? d * pp + p : -1;
  case PART_DP: return m->dp > 1 ? t * pp + p : -1;
  case PART_PIPE: return pp > 1 ? d * tp + t : -1;
  case PART_ZERO: return m->zero && m->dp > 1 ? t * pp + p : -1;
  default: return -1;
  }
}

typedef struct Pair {
  int a, b, round; /* a sends to b */
} Pair;

/* Every ordered pair of ranks in one message group (a pipeline's pairs differ in pipeline
 * rank, ZeRO's in replica: never the same pair twice), each given a round in which neither
 * of its ranks is in another pair, so that one ncclCommSplit per round makes the round's
 * links. Deterministic: every process computes the same list. */
static int plan_links(const MplCommMesh *m, int size, Pair **out, int *npairs, int *nrounds) {
  Pair *p = NULL;
  int n = 0, cap = 0;
  *out = NULL, *npairs = *nrounds = 0;
  for (int k = PART_PIPE; k <= PART_ZERO; k++)
    for (int a = 0; a < size; a++) {
      int ca = part_color(m, k, a);
      for (int b = 0; ca >= 0 && b < size; b++) {
        if (b == a || part_color(m, k, b) != ca) continue;
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

/* The ranks this process drives in the collective set-up calls: all of the world's
 * (threads: each call in one NCCL group, as one thread drives several GPUs) or its own. */
typedef struct Boot {
  int size, n;
  CRank *const *r; /* [n] */
  const int *w;    /* [n] their world ranks */
  const MplCommMesh *mesh;
} Boot;

/* ncclGroupEnd after a loop of grouped calls: the first error of the calls, else its own. */
static ncclResult_t group_end(ncclResult_t r) {
  ncclResult_t e = ncclGroupEnd();
  return r != ncclSuccess ? r : e;
}

static int boot_world(const Boot *b, const ncclUniqueId *id, MplErr *err) {
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t r = ncclSuccess;
  for (int i = 0; i < b->n && r == ncclSuccess; i++) {
    if (cudaSetDevice(b->r[i]->gpu) != cudaSuccess) r = ncclUnhandledCudaError;
    else r = ncclCommInitRank(&b->r[i]->world, b->size, *id, b->w[i]);
  }
  if ((r = group_end(r)) != ncclSuccess) return nccl_fail(err, "ncclCommInitRank (the world's communicator)", r, __FILE__, __LINE__);
  return MPL_OK;
}

#if HAVE_SPLIT
/* One ncclCommSplit of the world: color[i] < 0 leaves rank i out (out[i] = NULL). */
static int boot_split(const Boot *b, const int *color, const int *key, ncclComm_t *out, MplErr *err) {
  for (int i = 0; i < b->n; i++) out[i] = NULL;
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t r = ncclSuccess;
  for (int i = 0; i < b->n && r == ncclSuccess; i++) {
    if (cudaSetDevice(b->r[i]->gpu) != cudaSuccess) r = ncclUnhandledCudaError;
    else r = ncclCommSplit(b->r[i]->world, color[i] < 0 ? NCCL_SPLIT_NOCOLOR : color[i], key[i], &out[i], NULL);
  }
  if ((r = group_end(r)) != ncclSuccess) return nccl_fail(err, "ncclCommSplit", r, __FILE__, __LINE__);
  return MPL_OK;
}
#endif

enum { WARM_NONE, WARM_ALLREDUCE, WARM_SEND, WARM_RECV };

/* One element through each new communicator, in one group (one thread may drive both
 * ends of a link), then waits for it: connections are made now, not at the first step. */
static int boot_warm(const Boot *b, const ncclComm_t *comm, const cudaStream_t *stream, const int *op, MplErr *err) {
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
    return nccl_fail(err, "the warm-up of a new communicator (ncclAllReduce / ncclSend / ncclRecv of one element)", r, __FILE__,
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
static int boot_groups(const Boot *b, BootTmp *t, int k, MplErr *err) {
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
static int boot_round(const Boot *b, BootTmp *t, const Pair *p, int np, int round, MplErr *err) {
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
    CRank *cr = b->r[i];
    NcclLink *l = &(t->key[i] == 0 ? cr->to : cr->from)[t->peer[i]];
    CUDA_CHECK(cudaSetDevice(cr->gpu));
    CUDA_CHECK(cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking));
    t->op[i] = t->key[i] == 0 ? WARM_SEND : WARM_RECV, t->stream[i] = l->stream;
  }
  return st == MPL_OK ? boot_warm(b, t->out, t->stream, t->op, err) : MPL_ERR;
}

/* The mesh's all-reduce groups and message links. */
static int boot_mesh(const Boot *b, MplErr *err) {
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

/* The NCCL side of the ranks this process drives: the world's communicator from id, then
 * (a mesh that fits the world, NCCL >= 2.18) its groups and links; everything warmed up.
 * On error what was made stays in the ranks for the teardown. */
static int nccl_boot(const Boot *b, const ncclUniqueId *id, MplErr *err) {
  for (int i = 0; i < b->n; i++) {
    CRank *cr = b->r[i];
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

/* Waits (plainly: nothing failed) until the rank's streams, links' included, are idle. */
static void nccl_quiesce(CRank *cr, int size) {
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

/* Ends a rank's NCCL communicators: destroyed (after nccl_quiesce), or aborted, which ends
 * operations that wait for a rank that will not come; then its link streams and scratch. */
static void nccl_free_rank(CRank *cr, int size, bool abort) {
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

/* ==== the threads' world ==================================================================== */

static void abort_locked(MplCudaWorld *w, const char *why) {
  if (!w->aborted) snprintf(w->why, sizeof w->why, "%s", why);
  w->aborted = true;
  atomic_store_explicit(&w->stop, 1, memory_order_release);
  for (int r = 0; r < w->size; r++) pthread_cond_broadcast(&w->cond[r]);
}

void mpl_cuda_world_abort(MplCudaWorld *w, const char *why) {
  pthread_mutex_lock(&w->mu);
  abort_locked(w, why ? why : "aborted");
  pthread_mutex_unlock(&w->mu);
}

/* The flag host waits watch: the world's when NCCL work may wait for another rank. */
static const atomic_int *stop_flag(MplCudaWorld *w) { return w->use_nccl ? &w->stop : NULL; }

/* Frees, on the sender's comm stream, the staging buffers its receivers are done with. */
static int release_spent(MplCudaWorld *w, CRank *me, MplErr *err) {
  pthread_mutex_lock(&w->mu);
  Spent *s = me->spent;
  me->spent = NULL;
  pthread_mutex_unlock(&w->mu);
  int st = MPL_OK;
  for (Spent *next; s; s = next) {
    next = s->next;
    if (st == MPL_OK && cudaStreamWaitEvent(me->comm, s->done, 0) == cudaSuccess &&
        cudaFreeAsync(s->dbuf, me->comm) == cudaSuccess) {
    } else if (st == MPL_OK) {
      cudaGetLastError();
      st = mpl_errf(err, "cuda: cannot release a message buffer (cudaStreamWaitEvent / cudaFreeAsync)");
    }
    CUDA_SOFT(cudaEventDestroy(s->done));
    mpl_free(s);
  }
  return st;
}

/* ---- point to point ------------------------------------------------------------------- */

static int stage_device(CRank *me, CMsg *m, const void *buf, MplErr *err) {
  m->dev = me->gpu;
  if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaMallocAsync(&m->dbuf, m->bytes, me->comm));
  CUDA_CHECK(cudaMemcpyAsync(m->dbuf, buf, m->bytes, cudaMemcpyDeviceToDevice, me->comm));
  CUDA_CHECK(cudaEventCreateWithFlags(&m->ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(m->ready, me->comm));
  CUDA_CHECK(cudaStreamWaitEvent(me->compute, m->ready, 0)); /* buf may be reused after this */
  return MPL_OK;
}

static void msg_free(CMsg *m) {
  if (m->dbuf) CUDA_SOFT(cudaFree(m->dbuf)); /* only on error paths: synchronous */
  if (m->ready) CUDA_SOFT(cudaEventDestroy(m->ready));
  mpl_free(m->hbuf);
  mpl_free(m);
}

/* The message's payload: over the NCCL link to dst, a device copy, or host bytes. */
static int fill_msg(MplCudaWorld *w, CRank *me, int dst, CMsg *m, const void *buf, MplErr *err) {
  bool dev = m->bytes && mpl_cuda_is_device_ptr(buf);
#ifdef MPL_HAVE_NCCL
  if (dev && w->use_nccl && me->to[dst].comm) {
    m->linked = true;
    return link_send(me, &me->to[dst], buf, m->bytes, err);
  }
#endif
  if (dev) return stage_device(me, m, buf, err);
  if (!(m->hbuf = mpl_malloc(m->bytes ? m->bytes : 1))) return mpl_errf(err, "out of memory");
  if (m->bytes) memcpy(m->hbuf, buf, m->bytes);
  return MPL_OK;
}

static int cuda_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  CRank *me = &w->ranks[c->rank];
  if (dst < 0 || dst >= w->size || dst == c->rank) return mpl_errf(err, "rank %d: send to bad rank %d", c->rank, dst);
  CUDA_CHECK(cudaSetDevice(me->gpu));
  if (release_spent(w, me, err) != MPL_OK) return MPL_ERR;
  CMsg *m = mpl_calloc(1, sizeof *m);
  if (!m) return mpl_errf(err, "rank %d: out of memory", c->rank);
  m->tag = tag, m->bytes = bytes;
  if (fill_msg(w, me, dst, m, buf, err) != MPL_OK) {
    msg_free(m);
    return MPL_ERR;
  }
  pthread_mutex_lock(&w->mu);
  bool aborted = w->aborted;
  if (!aborted) {
    CQueue *q = &w->queues[c->rank * w->size + dst];
    if (q->tail) q->tail->next = m;
    else q->head = m;
    q->tail = m;
    pthread_cond_broadcast(&w->cond[dst]);
  }
  pthread_mutex_unlock(&w->mu);
  if (aborted) {
    msg_free(m);
    return mpl_errf(err, "rank %d: communicator aborted: %s", c->rank, w->why);
  }
  return MPL_OK;
}

/* Hands the staging buffer of m back to its sender, freed after `done`. */
static int give_back(MplCudaWorld *w, int src, CMsg *m, cudaStream_t after, MplErr *err) {
  Spent *s = mpl_calloc(1, sizeof *s);
  if (!s) return mpl_errf(err, "out of memory");
  s->dbuf = m->dbuf;
  m->dbuf = NULL;
  CUDA_CHECK(cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(s->done, after));
  pthread_mutex_lock(&w->mu);
  s->next = w->ranks[src].spent;
  w->ranks[src].spent = s;
  pthread_mutex_unlock(&w->mu);
  return MPL_OK;
}

/* Copies a device-copy or host message into buf (device or host) in stream order. */
static int deliver(MplCudaWorld *w, CRank *me, int src, CMsg *m, void *buf, MplErr *err) {
  bool dev_dst = m->bytes && mpl_cuda_is_device_ptr(buf);
  const atomic_int *stop = stop_flag(w);
  if (m->hbuf) {
    if (!dev_dst) {
      if (m->bytes) memcpy(buf, m->hbuf, m->bytes);
      return MPL_OK;
    }
    if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
    if (stop && mpl_cuda_wait(me->comm, NULL, stop, err) != MPL_OK) return MPL_ERR; /* a pageable copy may wait for the stream */
    CUDA_CHECK(cudaMemcpyAsync(buf, m->hbuf, m->bytes, cudaMemcpyHostToDevice, me->comm));
    return mpl_cuda_wait(me->comm, NULL, stop, err); /* hbuf is freed next */
  }
  if (dev_dst) {
    CUDA_CHECK(cudaStreamWaitEvent(me->comm, m->ready, 0));
    if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
    if (m->dev == me->gpu) CUDA_CHECK(cudaMemcpyAsync(buf, m->dbuf, m->bytes, cudaMemcpyDeviceToDevice, me->comm));
    else CUDA_CHECK(cudaMemcpyPeerAsync(buf, me->gpu, m->dbuf, m->dev, m->bytes, me->comm));
    if (stream_after(me->compute, me->comm, me->mark, err) != MPL_OK) return MPL_ERR;
  } else { /* into host memory: synchronous, from whichever GPU holds it */
    if (mpl_cuda_wait(NULL, m->ready, stop, err) != MPL_OK) return MPL_ERR;
    CUDA_CHECK(cudaMemcpy(buf, m->dbuf, m->bytes, cudaMemcpyDefault));
  }
  return give_back(w, src, m, me->comm, err);
}

static int cuda_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  CRank *me = &w->ranks[c->rank];
  if (src < 0 || src >= w->size || src == c->rank) return mpl_errf(err, "rank %d: recv from bad rank %d", c->rank, src);
  CUDA_CHECK(cudaSetDevice(me->gpu));
  CQueue *q = &w->queues[src * w->size + c->rank];
  pthread_mutex_lock(&w->mu);
  while (!w->aborted && !q->head) pthread_cond_wait(&w->cond[c->rank], &w->mu);
  if (w->aborted) {
    pthread_mutex_unlock(&w->mu);
    return mpl_errf(err, "rank %d: communicator aborted: %s", c->rank, w->why);
  }
  CMsg *m = q->head;
  if (m->tag != tag || m->bytes != bytes) {
    char why[200];
    snprintf(why, sizeof why, "rank %d expected tag %llx (%zu bytes) from rank %d, got tag %llx (%zu bytes)", c->rank,
             (unsigned long long)tag, bytes, src, (unsigned long long)m->tag, m->bytes);
    abort_locked(w, why);
    pthread_mutex_unlock(&w->mu);
    return mpl_errf(err, "%s", why);
  }
  q->head = m->next;
  if (!q->head) q->tail = NULL;
  pthread_mutex_unlock(&w->mu);
  int st;
#ifdef MPL_HAVE_NCCL
  if (m->linked && me->from[src].comm) st = link_recv(me, &me->from[src], buf, bytes, stop_flag(w), err);
  else
#endif
  if (m->linked) st = mpl_errf(err, "rank %d: a message from rank %d came by an NCCL link this rank does not have", c->rank, src);
  else st = deliver(w, me, src, m, buf, err);
  msg_free(m);
  return st;
}

/* ---- all-reduce and barrier --------------------------------------------------------------- */

/* Every member sends its buffer to every other, then sums them all in ascending rank
 * order (sorted) on the host: the same bits everywhere. */
static int host_allreduce(MplComm *c, const int *sorted, int nranks, float *buf, size_t n) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  CRank *me = &w->ranks[c->rank];
  uint64_t tag = TAG_ALLREDUCE | me->ar_seq++;
  size_t bytes = n * sizeof(float);
  for (int i = 0; i < nranks; i++)
    if (sorted[i] != c->rank && cuda_send(c, sorted[i], tag, buf, bytes) != MPL_OK) return MPL_ERR;
  float *acc = mpl_malloc(bytes + 4), *tmp = mpl_malloc(bytes + 4);
  int st = acc && tmp ? MPL_OK : mpl_errf(err, "out of memory");
  bool dev = n && mpl_cuda_is_device_ptr(buf);
  for (int i = 0, first = 1; i < nranks && st == MPL_OK; i++, first = 0) {
    int r = sorted[i];
    if (r == c->rank) {
      if (dev) st = me->dev->ops->copy_to_host(me->dev, tmp, buf, bytes, err);
      else memcpy(tmp, buf, bytes);
    } else {
      st = cuda_recv(c, r, tag, tmp, bytes);
    }
    for (size_t k = 0; k < n && st == MPL_OK; k++) acc[k] = first ? tmp[k] : acc[k] + tmp[k];
  }
  if (st == MPL_OK && dev) st = me->dev->ops->copy_from_host(me->dev, buf, acc, bytes, err);
  if (st == MPL_OK && dev) st = me->dev->ops->sync(me->dev, err);
  if (st == MPL_OK && !dev) memcpy(buf, acc, bytes);
  mpl_free(acc);
  mpl_free(tmp);
  return st;
}

static int cuda_allreduce(MplComm *c, const int *ranks, int nranks, float *buf, size_t n) {
  MplCudaWorld *w = world_of(c);
  CRank *me = &w->ranks[c->rank];
  if (atomic_load_explicit(&w->stop, memory_order_acquire)) /* raised after `why` is written */
    return mpl_errf(&c->err, "rank %d: communicator aborted: %s", c->rank, w->why);
  if (cudaSetDevice(me->gpu) != cudaSuccess) {
    cudaGetLastError();
    return mpl_errf(&c->err, "cuda: cudaSetDevice(%d) failed", me->gpu);
  }
  int *sorted = mpl_comm_sorted_members(c, ranks, nranks);
  if (!sorted) return MPL_ERR;
  int st;
#ifdef MPL_HAVE_NCCL
  ncclComm_t g = w->use_nccl && n && mpl_cuda_is_device_ptr(buf) ? group_comm(me, sorted, nranks, w->size) : NULL;
  if (g) st = nccl_allreduce(me, g, buf, n, &c->err);
  else
#endif
    st = host_allreduce(c, sorted, nranks, buf, n);
  mpl_free(sorted);
  return st;
}

static int cuda_barrier(MplComm *c) {
  MplCudaWorld *w = world_of(c);
  int *all = mpl_malloc(sizeof(int) * (size_t)w->size);
  if (!all) return mpl_errf(&c->err, "out of memory");
  for (int r = 0; r < w->size; r++) all[r] = r;
  float one = 1;
  int st = host_allreduce(c, all, w->size, &one, 1);
  mpl_free(all);
  return st;
}

static void cuda_abort(MplComm *c, const char *why) {
  char msg[256];
  snprintf(msg, sizeof msg, "rank %d: %s", c->rank, why ? why : "aborted");
  mpl_cuda_world_abort(world_of(c), msg);
}

static void cuda_comm_free(MplComm *c) { (void)c; /* owned by the world */ }

static const MplCommOps cuda_comm_ops = {
    .name = "cuda",
    .send = cuda_send,
    .recv = cuda_recv,
    .allreduce_sum_f32 = cuda_allreduce,
    .barrier = cuda_barrier,
    .abort = cuda_abort,
    .free = cuda_comm_free,
};

/* ---- the world ------------------------------------------------------------------------- */

static bool gpus_distinct(const MplCudaWorld *w) {
  for (int i = 0; i < w->size; i++)
    for (int j = 0; j < i; j++)
      if (w->ranks[i].gpu == w->ranks[j].gpu) return false;
  return true;
}

#ifdef MPL_HAVE_NCCL
/* Every rank's NCCL side, made by this thread; the devices' waits then watch `stop`. */
static int init_nccl(MplCudaWorld *w, const MplCommMesh *mesh, MplErr *err) {
  CRank **r = mpl_calloc((size_t)w->size, sizeof *r);
  int *ids = mpl_calloc((size_t)w->size, sizeof *ids);
  ncclUniqueId id;
  ncclResult_t nr = ncclSuccess;
  int st = r && ids ? MPL_OK : mpl_errf(err, "out of memory");
  if (st == MPL_OK && (nr = ncclGetUniqueId(&id)) != ncclSuccess) st = nccl_fail(err, "ncclGetUniqueId", nr, __FILE__, __LINE__);
  for (int i = 0; i < w->size && st == MPL_OK; i++) r[i] = &w->ranks[i], ids[i] = i;
  w->use_nccl = true; /* from here on the teardown looks for communicators */
  if (st == MPL_OK) st = nccl_boot(&(Boot){.size = w->size, .n = w->size, .r = r, .w = ids, .mesh = mesh}, &id, err);
  for (int i = 0; i < w->size && st == MPL_OK; i++) mpl_cuda_set_stop(w->ranks[i].dev, &w->stop);
  mpl_free(r);
  mpl_free(ids);
  return st;
}
#endif

/* Lets every pair of distinct GPUs in the world copy directly (where the hardware can),
 * the stream-ordered pool's memory (staging buffers, arenas) included: the pool does not
 * follow cudaDeviceEnablePeerAccess, its access is granted per device. */
static void enable_peers(MplCudaWorld *w) {
  for (int i = 0; i < w->size; i++)
    for (int j = 0; j < w->size; j++) {
      int a = w->ranks[i].gpu, b = w->ranks[j].gpu, can = 0;
      cudaMemPool_t pool;
      if (a == b || cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || !can) continue;
      if (cudaSetDevice(a) == cudaSuccess) {
        cudaError_t e = cudaDeviceEnablePeerAccess(b, 0);
        if (e != cudaSuccess) cudaGetLastError(); /* already enabled is fine; copies still work without */
      }
      struct cudaMemAccessDesc desc = {.location = {.type = cudaMemLocationTypeDevice, .id = a}, .flags = cudaMemAccessFlagsProtReadWrite};
      if (cudaDeviceGetDefaultMemPool(&pool, b) != cudaSuccess || cudaMemPoolSetAccess(pool, &desc, 1) != cudaSuccess)
        cudaGetLastError(); /* best effort, as above */
    }
}

#ifdef MPL_HAVE_NCCL
/* Adds why to a failed NCCL set-up when the ranks share GPUs (only MPL_NCCL=1 tries it). */
static int shared_gpu_hint(MplErr *err) {
  char msg[sizeof err->msg];
  snprintf(msg, sizeof msg, "%s", err->msg);
  return mpl_errf(err, "%s [MPL_NCCL=1 forces NCCL, but ranks share a GPU: NCCL needs one GPU per rank]", msg);
}
#endif

int mpl_cuda_world_init(MplCudaWorld **out, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  if (nranks < 1 || nranks > 4096) return mpl_errf(err, "cuda communicator: bad rank count %d", nranks);
  MplCudaWorld *w = mpl_calloc(1, sizeof *w);
  if (!w) return mpl_errf(err, "out of memory");
  w->size = nranks;
  w->cond = mpl_calloc((size_t)nranks, sizeof *w->cond);
  w->queues = mpl_calloc((size_t)nranks * (size_t)nranks, sizeof *w->queues);
  w->ranks = mpl_calloc((size_t)nranks, sizeof *w->ranks);
  w->comms = mpl_calloc((size_t)nranks, sizeof *w->comms);
  pthread_mutex_init(&w->mu, NULL);
  atomic_init(&w->stop, 0);
  for (int r = 0; r < nranks && w->cond; r++) pthread_cond_init(&w->cond[r], NULL);
  *out = w;
  if (!w->cond || !w->queues || !w->ranks || !w->comms) return mpl_errf(err, "out of memory");
  for (int r = 0; r < nranks; r++) {
    w->comms[r] = (MplComm){.ops = &cuda_comm_ops, .rank = r, .size = nranks, .impl = w};
    if (init_rank(&w->ranks[r], devs[r], err) != MPL_OK) return MPL_ERR;
  }
  enable_peers(w);
  int mode;
  if (nccl_mode(&mode, err) != MPL_OK) return MPL_ERR;
  if (!nccl_wanted(mode, nranks, gpus_distinct(w))) return MPL_OK;
#ifdef MPL_HAVE_NCCL
  if (init_nccl(w, mesh, err) != MPL_OK) {
    atomic_store(&w->stop, 1); /* the free aborts what was made */
    return gpus_distinct(w) ? MPL_ERR : shared_gpu_hint(err);
  }
#endif
  return MPL_OK;
}

MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r) { return r >= 0 && r < w->size ? &w->comms[r] : NULL; }

/* After every rank thread stopped: NCCL ended (destroyed after the streams drain, or
 * aborted after a failure), then undelivered messages and spent buffers are freed
 * synchronously. */
void mpl_cuda_world_free(MplCudaWorld *w) {
  if (!w) return;
#ifdef MPL_HAVE_NCCL
  bool abort = atomic_load(&w->stop) != 0;
  for (int r = 0; w->ranks && r < w->size; r++) {
    if (!w->ranks[r].dev) continue;
    mpl_cuda_set_stop(w->ranks[r].dev, NULL);
    if (w->use_nccl && !abort) nccl_quiesce(&w->ranks[r], w->size);
  }
  for (int r = 0; w->ranks && w->use_nccl && r < w->size; r++) nccl_free_rank(&w->ranks[r], w->size, abort);
#endif
  for (int i = 0; w->queues && i < w->size * w->size; i++)
    for (CMsg *m = w->queues[i].head, *next; m; m = next) {
      next = m->next;
      if (m->dbuf) {
        CUDA_SOFT(cudaSetDevice(m->dev));
        CUDA_SOFT(cudaDeviceSynchronize());
      }
      msg_free(m);
    }
  for (int r = 0; w->ranks && r < w->size; r++) {
    CRank *cr = &w->ranks[r];
    if (!cr->dev) continue;
    CUDA_SOFT(cudaSetDevice(cr->gpu));
    CUDA_SOFT(cudaDeviceSynchronize());
    for (Spent *s = cr->spent, *next; s; s = next) {
      next = s->next;
      CUDA_SOFT(cudaFree(s->dbuf));
      CUDA_SOFT(cudaEventDestroy(s->done));
      mpl_free(s);
    }
    CUDA_SOFT(cudaEventDestroy(cr->mark));
  }
  for (int r = 0; w->cond && r < w->size; r++) pthread_cond_destroy(&w->cond[r]);
  pthread_mutex_destroy(&w->mu);
  mpl_free(w->cond);
  mpl_free(w->queues);
  mpl_free(w->ranks);
  mpl_free(w->comms);
  mpl_free(w);
}

/* ==== one rank per process, under MPI ========================================================= */

typedef struct CudaMpi {
  MplComm comm;          /* ops = cuda_mpi_ops; rank and size are mpi's */
  MplComm *mpi;          /* the process's MPI communicator: host messages (not owned) */
  CRank me;
  bool use_nccl;
  bool failed;           /* an operation failed: free aborts NCCL instead of waiting for it */
  uint8_t *host;         /* device buffers staged through the host */
  size_t host_cap;
} CudaMpi;

/* What goes over MPI before every payload: its size, and whether it comes by NCCL. */
typedef struct MsgHead {
  uint64_t bytes;
  uint32_t linked, pad;
} MsgHead;

/* The result of a call on the MPI communicator, its message copied into err. */
static int over_mpi(CudaMpi *m, int st, MplErr *err) {
  if (st == MPL_OK) return MPL_OK;
  return mpl_errf(err, "%s", m->mpi->err.msg);
}

static void *host_stage(CudaMpi *m, size_t bytes) {
  if (bytes <= m->host_cap) return m->host;
  uint8_t *p = mpl_realloc(m->host, bytes);
  if (!p) return NULL;
  m->host = p, m->host_cap = bytes;
  return p;
}

static int cm_send_body(CudaMpi *m, int dst, uint64_t tag, const void *buf, size_t bytes) {
  MplErr *err = &m->comm.err;
  CRank *me = &m->me;
  MplComm *mpi = m->mpi;
  CUDA_CHECK(cudaSetDevice(me->gpu));
  bool dev = bytes && mpl_cuda_is_device_ptr(buf);
  MsgHead h = {.bytes = bytes};
#ifdef MPL_HAVE_NCCL
  if (dev && m->use_nccl && me->to[dst].comm) {
    if (link_send(me, &me->to[dst], buf, bytes, err) != MPL_OK) return MPL_ERR;
    h.linked = 1; /* posted before the header leaves: the peer's recv finds it */
    return over_mpi(m, mpi->ops->send(mpi, dst, tag, &h, sizeof h), err);
  }
#endif
  if (over_mpi(m, mpi->ops->send(mpi, dst, tag, &h, sizeof h), err) != MPL_OK) return MPL_ERR;
  if (!bytes) return MPL_OK;
  const void *src = buf;
  if (dev) {
    void *hs = host_stage(m, bytes);
    if (!hs) return mpl_errf(err, "rank %d: out of memory staging %zu bytes", m->comm.rank, bytes);
    if (me->dev->ops->copy_to_host(me->dev, hs, buf, bytes, err) != MPL_OK) return MPL_ERR;
    src = hs; /* the MPI send copies it: reusable at once */
  }
  return over_mpi(m, mpi->ops->send(mpi, dst, tag, src, bytes), err);
}

static int cm_recv_body(CudaMpi *m, int src, uint64_t tag, void *buf, size_t bytes) {
  MplErr *err = &m->comm.err;
  CRank *me = &m->me;
  MplComm *mpi = m->mpi;
  MsgHead h;
  if (over_mpi(m, mpi->ops->recv(mpi, src, tag, &h, sizeof h), err) != MPL_OK) return MPL_ERR;
  if (h.bytes != bytes)
    return mpl_errf(err, "rank %d: recv from rank %d (tag %#llx) expected %zu bytes but the message has %llu", m->comm.rank,
                    src, (unsigned long long)tag, bytes, (unsigned long long)h.bytes);
  if (!bytes) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(me->gpu));
  if (h.linked) {
#ifdef MPL_HAVE_NCCL
    if (m->use_nccl && me->from[src].comm) return link_recv(me, &me->from[src], buf, bytes, NULL, err);
#endif
    return mpl_errf(err, "rank %d: a message from rank %d came by an NCCL link this rank does not have", m->comm.rank, src);
  }
  if (!mpl_cuda_is_device_ptr(buf)) return over_mpi(m, mpi->ops->recv(mpi, src, tag, buf, bytes), err);
  void *hs = host_stage(m, bytes);
  if (!hs) return mpl_errf(err, "rank %d: out of memory staging %zu bytes", m->comm.rank, bytes);
  if (over_mpi(m, mpi->ops->recv(mpi, src, tag, hs, bytes), err) != MPL_OK) return MPL_ERR;
  return me->dev->ops->copy_from_host(me->dev, buf, hs, bytes, err); /* compute stream; hs reusable on return */
}

static int cm_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  CudaMpi *m = c->impl;
  if (dst < 0 || dst >= c->size || dst == c->rank) return mpl_errf(&c->err, "rank %d: send to bad rank %d", c->rank, dst);
  int st = cm_send_body(m, dst, tag, buf, bytes);
  m->failed |= st != MPL_OK;
  return st;
}

static int cm_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  CudaMpi *m = c->impl;
  if (src < 0 || src >= c->size || src == c->rank) return mpl_errf(&c->err, "rank %d: recv from bad rank %d", c->rank, src);
  int st = cm_recv_body(m, src, tag, buf, bytes);
  m->failed |= st != MPL_OK;
  return st;
}

/* Device buffers: NCCL on the group's communicator, else staged through the host and
 * summed by the MPI communicator (ascending rank order). Every member passes the same
 * kind of buffer (they run the same program on the same kind of device). */
static int cm_allreduce_body(CudaMpi *m, const int *sorted, int k, float *buf, size_t n) {
  MplErr *err = &m->comm.err;
  CRank *me = &m->me;
  if (k == 1 || n == 0) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(me->gpu));
  bool dev = mpl_cuda_is_device_ptr(buf);
#ifdef MPL_HAVE_NCCL
  ncclComm_t g = dev && m->use_nccl ? group_comm(me, sorted, k, m->comm.size) : NULL;
  if (g) return nccl_allreduce(me, g, buf, n, err);
#endif
  if (!dev) return over_mpi(m, m->mpi->ops->allreduce_sum_f32(m->mpi, sorted, k, buf, n), err);
  size_t bytes = n * sizeof(float);
  float *hs = host_stage(m, bytes);
  if (!hs) return mpl_errf(err, "rank %d: out of memory staging %zu bytes", m->comm.rank, bytes);
  if (me->dev->ops->copy_to_host(me->dev, hs, buf, bytes, err) != MPL_OK) return MPL_ERR;
  if (over_mpi(m, m->mpi->ops->allreduce_sum_f32(m->mpi, sorted, k, hs, n), err) != MPL_OK) return MPL_ERR;
  return me->dev->ops->copy_from_host(me->dev, buf, hs, bytes, err);
}

static int cm_allreduce(MplComm *c, const int *ranks, int nranks, float *buf, size_t n) {
  CudaMpi *m = c->impl;
  int *sorted = mpl_comm_sorted_members(c, ranks, nranks);
  if (!sorted) return MPL_ERR;
  int st = cm_allreduce_body(m, sorted, nranks, buf, n);
  mpl_free(sorted);
  m->failed |= st != MPL_OK;
  return st;
}

static int cm_barrier(MplComm *c) {
  CudaMpi *m = c->impl;
  return over_mpi(m, m->mpi->ops->barrier(m->mpi), &c->err);
}

static void cm_abort(MplComm *c, const char *why) {
  CudaMpi *m = c->impl;
  m->failed = true;
  m->mpi->ops->abort(m->mpi, why); /* MPI_Abort: does not return */
}

/* NCCL ended (destroyed once this rank's streams drain — its last sends wait for their
 * receivers — or aborted after an error); the MPI communicator is left to its owner. */
static void cm_free(MplComm *c) {
  if (!c) return;
  CudaMpi *m = c->impl;
  CRank *cr = &m->me;
#ifdef MPL_HAVE_NCCL
  if (m->use_nccl && !m->failed) nccl_quiesce(cr, c->size);
  if (m->use_nccl) nccl_free_rank(cr, c->size, m->failed);
#endif
  if (cr->dev) {
    CUDA_SOFT(cudaSetDevice(cr->gpu));
    if (cr->mark) CUDA_SOFT(cudaEventDestroy(cr->mark));
  }
  mpl_free(m->host);
  mpl_free(m);
}

static const MplCommOps cuda_mpi_ops = {
    .name = "cuda+mpi",
    .send = cm_send,
    .recv = cm_recv,
    .allreduce_sum_f32 = cm_allreduce,
    .barrier = cm_barrier,
    .abort = cm_abort,
    .free = cm_free,
};

/* What tells GPUs apart across hosts, allgathered; mode: this process's MPL_NCCL. */
typedef struct GpuId {
  char host[64];
  char bus[32];
  int32_t mode, gpu;
} GpuId;

/* The world's GPUs, and whether any two ranks share one (by host name and PCI bus id). */
static int gather_gpus(CudaMpi *m, int mode, bool *distinct, int *mode0, MplErr *err) {
  GpuId mine;
  memset(&mine, 0, sizeof mine);
  if (gethostname(mine.host, sizeof mine.host - 1) != 0) snprintf(mine.host, sizeof mine.host, "?");
  CUDA_CHECK(cudaDeviceGetPCIBusId(mine.bus, (int)sizeof mine.bus, m->me.gpu));
  mine.mode = mode, mine.gpu = m->me.gpu;
  GpuId *all = mpl_calloc((size_t)m->comm.size, sizeof *all);
  if (!all) return mpl_errf(err, "out of memory");
  int st = over_mpi(m, mpl_comm_mpi_allgather(m->mpi, &mine, all, sizeof mine), err);
  *distinct = true;
  for (int i = 0; i < m->comm.size && st == MPL_OK; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(all[i].host, all[j].host) && !strcmp(all[i].bus, all[j].bus)) *distinct = false;
  *mode0 = all[0].mode;
  mpl_free(all);
  return st;
}

#ifdef MPL_HAVE_NCCL
/* Rank 0's ncclGetUniqueId (or why it failed) to every process, then the NCCL side. */
static int mpi_nccl(CudaMpi *m, const MplCommMesh *mesh, MplErr *err) {
  struct {
    int32_t ok;
    char why[124];
    ncclUniqueId id;
  } u;
  memset(&u, 0, sizeof u);
  if (m->comm.rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&u.id);
    u.ok = r == ncclSuccess;
    if (!u.ok) snprintf(u.why, sizeof u.why, "%s", ncclGetErrorString(r));
  }
  if (over_mpi(m, mpl_comm_mpi_bcast(m->mpi, 0, &u, sizeof u), err) != MPL_OK) return MPL_ERR;
  if (!u.ok) return mpl_errf(err, "NCCL: ncclGetUniqueId on rank 0: %s", u.why);
  CRank *me = &m->me;
  int w = m->comm.rank;
  return nccl_boot(&(Boot){.size = m->comm.size, .n = 1, .r = &me, .w = &w, .mesh = mesh}, &u.id, err);
}
#endif

int mpl_cuda_mpi_init(MplComm **out, MplComm *mpi, MplDevice *dev, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  CudaMpi *m = mpl_calloc(1, sizeof *m);
  if (!m) return mpl_errf(err, "out of memory");
  m->comm = (MplComm){.ops = &cuda_mpi_ops, .rank = mpi->rank, .size = mpi->size, .impl = m};
  m->mpi = mpi;
  *out = &m->comm; /* freed by the caller, also after an error */
  int mode = NCCL_AUTO, mode0 = NCCL_AUTO;
  bool distinct = false;
  if (init_rank(&m->me, dev, err) != MPL_OK || nccl_mode(&mode, err) != MPL_OK ||
      gather_gpus(m, mode, &distinct, &mode0, err) != MPL_OK)
    return MPL_ERR;
  m->use_nccl = nccl_wanted(mode0, m->comm.size, distinct); /* rank 0's MPL_NCCL: every process alike */
  if (!m->use_nccl) return MPL_OK;
#ifdef MPL_HAVE_NCCL
  if (mpi_nccl(m, mesh, err) != MPL_OK) {
    m->failed = true;
    return distinct ? MPL_ERR : shared_gpu_hint(err);
  }
#endif
  return MPL_OK;
}

#else /* !MPL_HAVE_CUDA */

int mpl_cuda_world_init(MplCudaWorld **out, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  return mpl_errf(err, "this mplrun was built without CUDA");
}
MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r) { return NULL; }
void mpl_cuda_world_abort(MplCudaWorld *w, const char *why) {}
void mpl_cuda_world_free(MplCudaWorld *w) {}
int mpl_cuda_mpi_init(MplComm **out, MplComm *mpi, MplDevice *dev, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  return mpl_errf(err, "this mplrun was built without CUDA");
}

#endif
