/*
 * comm_nccl.c — the communicator of ranks on CUDA devices, behind MplCommOps: ranks are
 * threads of one process, each with its cuda MplDevice (several may share one GPU).
 *
 * Messages are device copies, eager like the in-process communicator's:
 *  - send of a device buffer: the sender's comm stream waits for its compute stream, a
 *    staging buffer is taken from the stream-ordered pool and filled on the comm stream,
 *    an event marks it ready, and the compute stream waits for that copy only (so the
 *    planned buffer may be reused at once; compute of the next micro-batch overlaps the
 *    receiver's wait and the transfer). The message is queued (src, dst) FIFO;
 *  - recv of a device buffer: the receiver's comm stream waits for its compute stream
 *    (earlier readers of the buffer) and the message's event, copies (cudaMemcpyPeerAsync
 *    across GPUs), and the compute stream waits for the copy. The staging buffer goes
 *    back to the sender with an event, and the sender frees it on its own comm stream;
 *  - host buffers (gradient norms, staged gradients) travel as host bytes; mixed pairs
 *    (device to host and back) copy synchronously on the comm stream;
 *  - tags and sizes must match the FIFO's head, else the world aborts (no hang); abort
 *    wakes every blocked recv.
 * All-reduce sums in ascending rank order on the host (identical bits on every member);
 * with NCCL built in and every rank on its own GPU, device buffers are reduced with
 * ncclAllReduce on the comm streams (communicators from ncclCommInitAll, one thread per
 * GPU). Under MPI (one process per GPU, an NCCL unique id broadcast over MPI and
 * ncclCommInitRank) this file has no implementation yet: mplrun and exec.c refuse
 * --devices cuda under mpirun with a message (the MPI mode runs cpu devices, comm_mpi.c).
 */
#include "exec.h"

#include <pthread.h>
#include <string.h>

#ifdef MPL_HAVE_CUDA

#include "cuda_rt.h"
#ifdef MPL_HAVE_NCCL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes" /* nccl.h declares f() */
#include <nccl.h>
#pragma GCC diagnostic pop
#define NCCL_CHECK(call)                                                                            \
  do {                                                                                              \
    ncclResult_t n_ = (call);                                                                       \
    if (n_ != ncclSuccess)                                                                          \
      return mpl_errf(err, "NCCL: %s: %s (%s:%d)", #call, ncclGetErrorString(n_), __FILE__, __LINE__); \
  } while (0)
#endif

#define TAG_ALLREDUCE (7ull << 60)

typedef struct CMsg {
  struct CMsg *next;
  uint64_t tag;
  size_t bytes;
  void *dbuf;            /* device message: staging on device `dev`, ready after `ready` */
  int dev;
  cudaEvent_t ready;
  uint8_t *hbuf;         /* host message */
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

typedef struct CRank {
  MplDevice *dev;
  int gpu;
  cudaStream_t compute, comm;
  cudaEvent_t mark;      /* re-recorded: "compute has reached here" */
  Spent *spent;          /* guarded by the world mutex */
  uint64_t ar_seq;       /* all-reduce sequence number */
} CRank;

struct MplCudaWorld {
  int size;
  pthread_mutex_t mu;
  pthread_cond_t *cond;  /* [size] recv of rank r waits on cond[r] */
  CQueue *queues;        /* [src * size + dst] */
  CRank *ranks;
  MplComm *comms;
  bool aborted;
  char why[256];
  bool use_nccl;
#ifdef MPL_HAVE_NCCL
  ncclComm_t *nccl;      /* [size] */
#endif
};

static MplCudaWorld *world_of(MplComm *c) { return c->impl; }

static bool is_device_ptr(const void *p) {
  struct cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

static void abort_locked(MplCudaWorld *w, const char *why) {
  if (!w->aborted) snprintf(w->why, sizeof w->why, "%s", why);
  w->aborted = true;
  for (int r = 0; r < w->size; r++) pthread_cond_broadcast(&w->cond[r]);
}

void mpl_cuda_world_abort(MplCudaWorld *w, const char *why) {
  pthread_mutex_lock(&w->mu);
  abort_locked(w, why ? why : "aborted");
  pthread_mutex_unlock(&w->mu);
}

/* Makes `waiter` wait for everything queued on `stream` so far. */
static int stream_after(cudaStream_t waiter, cudaStream_t stream, cudaEvent_t mark, MplErr *err) {
  CUDA_CHECK(cudaEventRecord(mark, stream));
  CUDA_CHECK(cudaStreamWaitEvent(waiter, mark, 0));
  return MPL_OK;
}

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
      st = mpl_errf(err, "cuda: cannot release a message buffer");
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
  int st = MPL_OK;
  if (bytes && is_device_ptr(buf)) st = stage_device(me, m, buf, err);
  else if (!(m->hbuf = mpl_malloc(bytes ? bytes : 1))) st = mpl_errf(err, "rank %d: out of memory", c->rank);
  else if (bytes) memcpy(m->hbuf, buf, bytes);
  if (st != MPL_OK) {
    if (m->dbuf) CUDA_SOFT(cudaFree(m->dbuf));
    mpl_free(m->hbuf);
    mpl_free(m);
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
    if (m->dbuf) CUDA_SOFT(cudaFree(m->dbuf));
    mpl_free(m->hbuf);
    mpl_free(m);
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

/* Copies the message into buf (device or host) in stream order. */
static int deliver(MplCudaWorld *w, CRank *me, int src, CMsg *m, void *buf, MplErr *err) {
  bool dev_dst = m->bytes && is_device_ptr(buf);
  if (m->hbuf) {
    if (!dev_dst) {
      if (m->bytes) memcpy(buf, m->hbuf, m->bytes);
      return MPL_OK;
    }
    if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
    CUDA_CHECK(cudaMemcpyAsync(buf, m->hbuf, m->bytes, cudaMemcpyHostToDevice, me->comm));
    CUDA_CHECK(cudaStreamSynchronize(me->comm)); /* hbuf is freed next */
    return MPL_OK;
  }
  if (dev_dst) {
    CUDA_CHECK(cudaStreamWaitEvent(me->comm, m->ready, 0));
    if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
    if (m->dev == me->gpu) CUDA_CHECK(cudaMemcpyAsync(buf, m->dbuf, m->bytes, cudaMemcpyDeviceToDevice, me->comm));
    else CUDA_CHECK(cudaMemcpyPeerAsync(buf, me->gpu, m->dbuf, m->dev, m->bytes, me->comm));
    if (stream_after(me->compute, me->comm, me->mark, err) != MPL_OK) return MPL_ERR;
  } else { /* into host memory: synchronous, from whichever GPU holds it */
    CUDA_CHECK(cudaEventSynchronize(m->ready));
    CUDA_CHECK(cudaMemcpy(buf, m->dbuf, m->bytes, cudaMemcpyDefault));
  }
  return give_back(w, src, m, me->comm, err);
}

static void msg_free(CMsg *m) {
  if (m->dbuf) CUDA_SOFT(cudaFree(m->dbuf)); /* only on error paths: synchronous */
  if (m->ready) CUDA_SOFT(cudaEventDestroy(m->ready));
  mpl_free(m->hbuf);
  mpl_free(m);
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
  int st = deliver(w, me, src, m, buf, err);
  msg_free(m);
  return st;
}

/* ---- all-reduce and barrier --------------------------------------------------------------- */

/* Every member sends its buffer to every other, then sums them all in ascending rank
 * order on the host: the same bits everywhere. */
static int host_allreduce(MplComm *c, const int *ranks, int nranks, float *buf, size_t n) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  CRank *me = &w->ranks[c->rank];
  uint64_t tag = TAG_ALLREDUCE | me->ar_seq++;
  size_t bytes = n * sizeof(float);
  for (int i = 0; i < nranks; i++)
    if (ranks[i] != c->rank && cuda_send(c, ranks[i], tag, buf, bytes) != MPL_OK) return MPL_ERR;
  float *acc = mpl_malloc(bytes + 4), *tmp = mpl_malloc(bytes + 4);
  int st = acc && tmp ? MPL_OK : mpl_errf(err, "out of memory");
  bool dev = n && is_device_ptr(buf);
  for (int i = 0, first = 1; i < nranks && st == MPL_OK; i++, first = 0) {
    int r = ranks[i];
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

#ifdef MPL_HAVE_NCCL
/* ncclAllReduce over the world (every rank its own GPU) on the comm stream. */
static int nccl_allreduce(MplComm *c, float *buf, size_t n) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  CRank *me = &w->ranks[c->rank];
  if (stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, w->nccl[c->rank], me->comm));
  return stream_after(me->compute, me->comm, me->mark, err);
}
#endif

static int cuda_allreduce(MplComm *c, const int *ranks, int nranks, float *buf, size_t n) {
  MplCudaWorld *w = world_of(c);
  if (w->aborted) return mpl_errf(&c->err, "rank %d: communicator aborted: %s", c->rank, w->why);
  if (cudaSetDevice(w->ranks[c->rank].gpu) != cudaSuccess) return mpl_errf(&c->err, "cuda: cudaSetDevice failed");
#ifdef MPL_HAVE_NCCL
  if (w->use_nccl && nranks == w->size && n && is_device_ptr(buf)) return nccl_allreduce(c, buf, n);
#endif
  return host_allreduce(c, ranks, nranks, buf, n);
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

#ifdef MPL_HAVE_NCCL
/* NCCL when every rank has its own GPU (NCCL refuses a GPU twice in one communicator). */
static int init_nccl(MplCudaWorld *w, MplErr *err) {
  if (w->size < 2) return MPL_OK;
  int *gpus = mpl_malloc(sizeof(int) * (size_t)w->size);
  if (!gpus) return mpl_errf(err, "out of memory");
  bool distinct = true;
  for (int i = 0; i < w->size; i++) {
    gpus[i] = w->ranks[i].gpu;
    for (int j = 0; j < i; j++) distinct &= gpus[j] != gpus[i];
  }
  int st = MPL_OK;
  if (distinct) {
    w->nccl = mpl_calloc((size_t)w->size, sizeof *w->nccl);
    ncclResult_t r = w->nccl ? ncclCommInitAll(w->nccl, w->size, gpus) : ncclSystemError;
    if (r == ncclSuccess) w->use_nccl = true;
    else st = mpl_errf(err, "NCCL: ncclCommInitAll over %d GPUs: %s", w->size, ncclGetErrorString(r));
  }
  mpl_free(gpus);
  return st;
}
#endif

static int init_rank(CRank *cr, MplDevice *d, MplErr *err) {
  if (!d || d->ops != &mpl_device_cuda_ops || !d->impl) return mpl_errf(err, "cuda communicator: a rank is not on a cuda device");
  cr->dev = d;
  cr->gpu = d->index;
  mpl_cuda_streams(d, &cr->compute, &cr->comm);
  CUDA_CHECK(cudaSetDevice(cr->gpu));
  CUDA_CHECK(cudaEventCreateWithFlags(&cr->mark, cudaEventDisableTiming));
  return MPL_OK;
}

/* Lets every pair of distinct GPUs in the world copy directly (where the hardware can). */
static void enable_peers(MplCudaWorld *w) {
  for (int i = 0; i < w->size; i++)
    for (int j = 0; j < w->size; j++) {
      int a = w->ranks[i].gpu, b = w->ranks[j].gpu, can = 0;
      if (a == b || cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || !can) continue;
      if (cudaSetDevice(a) == cudaSuccess) {
        cudaError_t e = cudaDeviceEnablePeerAccess(b, 0);
        if (e != cudaSuccess) cudaGetLastError(); /* already enabled is fine; copies still work without */
      }
    }
}

int mpl_cuda_world_init(MplCudaWorld **out, int nranks, MplDevice *const *devs, MplErr *err) {
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
  for (int r = 0; r < nranks && w->cond; r++) pthread_cond_init(&w->cond[r], NULL);
  *out = w;
  if (!w->cond || !w->queues || !w->ranks || !w->comms) return mpl_errf(err, "out of memory");
  for (int r = 0; r < nranks; r++) {
    w->comms[r] = (MplComm){.ops = &cuda_comm_ops, .rank = r, .size = nranks, .impl = w};
    if (init_rank(&w->ranks[r], devs[r], err) != MPL_OK) return MPL_ERR;
  }
  enable_peers(w);
#ifdef MPL_HAVE_NCCL
  if (init_nccl(w, err) != MPL_OK) return MPL_ERR;
#endif
  return MPL_OK;
}

MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r) { return r >= 0 && r < w->size ? &w->comms[r] : NULL; }

/* After every rank thread stopped: undelivered messages and spent buffers are freed
 * synchronously. */
void mpl_cuda_world_free(MplCudaWorld *w) {
  if (!w) return;
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
#ifdef MPL_HAVE_NCCL
  for (int r = 0; w->nccl && r < w->size; r++)
    if (w->nccl[r]) ncclCommDestroy(w->nccl[r]);
  mpl_free(w->nccl);
#endif
  for (int r = 0; w->cond && r < w->size; r++) pthread_cond_destroy(&w->cond[r]);
  pthread_mutex_destroy(&w->mu);
  mpl_free(w->cond);
  mpl_free(w->queues);
  mpl_free(w->ranks);
  mpl_free(w->comms);
  mpl_free(w);
}

#else /* !MPL_HAVE_CUDA */

int mpl_cuda_world_init(MplCudaWorld **out, int nranks, MplDevice *const *devs, MplErr *err) {
  *out = NULL;
  return mpl_errf(err, "this mplrun was built without CUDA");
}
MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r) { return NULL; }
void mpl_cuda_world_abort(MplCudaWorld *w, const char *why) {}
void mpl_cuda_world_free(MplCudaWorld *w) {}

#endif
