/*
 * comm_cuda_world.c — the communicator of ranks that are threads of one process, each on
 * its cuda device (several may share a GPU): mpl_cuda_world_* (comm.h). Messages go
 * through the device mailbox: mailbox.c's FIFO per pair, whose messages carry device
 * copies, host bytes, or the header of an NCCL message (comm_nccl.c's links).
 *
 * Which way a device message or collective goes: over NCCL when the world uses it (see
 * comm_nccl.c: every rank on its own GPU, or MPL_NCCL=1) and the mesh made a link for the
 * pair or a communicator for the group; otherwise the fallback below. Host buffers (the
 * gradient norms) never go over NCCL.
 *
 * Device-copy messages, eager like the in-process communicator's:
 *  - send of a device buffer: the sender's comm stream waits for its compute stream, a
 *    staging buffer is taken from the stream-ordered pool and filled on the comm stream,
 *    an event marks it ready, and the compute stream waits for that copy only (so the
 *    planned buffer may be reused at once). The message is queued (src, dst) FIFO;
 *  - recv of a device buffer: the receiver's comm stream waits for its compute stream
 *    (earlier readers of the buffer) and the message's event, copies (cudaMemcpyPeerAsync
 *    across GPUs), and the compute stream waits for the copy. The staging buffer goes
 *    back to the sender with an event, and the sender frees it on its own comm stream;
 *  - host buffers travel as host bytes; mixed pairs (device to host and back) copy
 *    synchronously;
 *  - tags and sizes must match the FIFO's head, else the world aborts (no hang).
 * The fallback collectives are comm.c's, made of these messages on a channel of their own
 * (so they never meet the executor's messages in a FIFO): each member sends each other
 * member what it needs (whole buffers for an all-reduce, chunks for a reduce-scatter or an
 * all-gather), and sums are added on the host in ascending rank order (the bits of the
 * local communicator), then copied back to the device. A collective's messages never take
 * an NCCL link (a link's NCCL operations must match its p2p headers' order).
 *
 * Failure: abort wakes every blocked recv and raises a stop flag that every host wait for
 * GPU work watches once NCCL is in use (mpl_cuda_wait: that work may wait for a rank that
 * failed); the world's free then aborts its NCCL communicators instead of destroying them.
 * Every CUDA and NCCL call is checked, with a message that names it.
 */
#include "exec.h"

#include <stdlib.h>
#include <string.h>

#ifdef MPL_HAVE_CUDA

#include "comm_cuda.h"

enum { CHAN_P2P, CHAN_COLL, NCHAN }; /* the mailbox's channels */

typedef struct CMsg {
  MplMail mail;
  void *dbuf;            /* device message: staging on device `dev`, ready after `ready` */
  int dev;
  cudaEvent_t ready;
  uint8_t *hbuf;         /* host message */
  bool linked;           /* NCCL message: the payload comes over the link */
} CMsg;

/* A staging buffer the receiver is done with (after `done`), to be freed by its sender. */
typedef struct Spent {
  struct Spent *next;
  void *dbuf;
  cudaEvent_t done;
} Spent;

typedef struct WorldRank {
  CudaRank cr;
  Spent *spent;          /* under the mailbox's mutex */
  MplScratch scratch;    /* host sums of the fallback collectives */
} WorldRank;

struct MplCudaWorld {
  MplMailbox mb;         /* the FIFOs, the world's mutex, the abort flag and reason */
  WorldRank *ranks;
  MplComm *comms;
  atomic_int stop;       /* raised with the abort; the GPU waits watch it when NCCL is in use */
  bool use_nccl;
};

static MplCudaWorld *world_of(MplComm *c) { return c->impl; }

/* The mailbox's wake hook (under its mutex, after the reason is written). */
static void raise_stop(void *owner) {
  MplCudaWorld *w = owner;
  atomic_store_explicit(&w->stop, 1, memory_order_release);
}

void mpl_cuda_world_abort(MplCudaWorld *w, const char *why) { mpl_mailbox_abort(&w->mb, why ? why : "aborted"); }

/* The flag host waits watch: the world's when NCCL work may wait for another rank. */
static const atomic_int *stop_flag(MplCudaWorld *w) { return w->use_nccl ? &w->stop : NULL; }

/* Frees, on the sender's comm stream, the staging buffers its receivers are done with. */
static int release_spent(MplCudaWorld *w, WorldRank *me, MplErr *err) {
  pthread_mutex_lock(&w->mb.mu);
  Spent *s = me->spent;
  me->spent = NULL;
  pthread_mutex_unlock(&w->mb.mu);
  int st = MPL_OK;
  for (Spent *next; s; s = next) {
    next = s->next;
    if (st == MPL_OK && cudaStreamWaitEvent(me->cr.comm, s->done, 0) == cudaSuccess &&
        cudaFreeAsync(s->dbuf, me->cr.comm) == cudaSuccess) {
    } else if (st == MPL_OK) {
      cudaGetLastError();
      st = mpl_errf(err, "cuda: cannot release a message buffer (cudaStreamWaitEvent / cudaFreeAsync)");
    }
    CUDA_SOFT(cudaEventDestroy(s->done));
    mpl_free(s);
  }
  return st;
}

/* ---- messages ---------------------------------------------------------------------------- */

static int stage_device(CudaRank *me, CMsg *m, const void *buf, MplErr *err) {
  m->dev = me->gpu;
  if (mpl_cuda_stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
  CUDA_CHECK(cudaMallocAsync(&m->dbuf, m->mail.bytes, me->comm));
  CUDA_CHECK(cudaMemcpyAsync(m->dbuf, buf, m->mail.bytes, cudaMemcpyDeviceToDevice, me->comm));
  CUDA_CHECK(cudaEventCreateWithFlags(&m->ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(m->ready, me->comm));
  CUDA_CHECK(cudaStreamWaitEvent(me->compute, m->ready, 0)); /* buf may be reused after this */
  return MPL_OK;
}

static void msg_free(CMsg *m) {
  /* m->dbuf is set only on error paths, and is left to the process's end: cudaFree does not
     wait for a cudaMallocAsync buffer's queued copy, and a cudaDeviceSynchronize to wait
     for it could wait forever behind an NCCL kernel whose peer failed (the abort that
     mpl_cuda_wait promises would hang), on the wrong device besides (pass 55) */
  if (m->ready) CUDA_SOFT(cudaEventDestroy(m->ready));
  mpl_free(m->hbuf);
  mpl_free(m);
}

/* The message's payload: over the NCCL link to dst (point-to-point messages only), a
 * device copy, or host bytes. */
static int fill_msg(MplCudaWorld *w, CudaRank *me, int chan, int dst, CMsg *m, const void *buf, MplErr *err) {
  size_t bytes = m->mail.bytes;
  bool dev = bytes && mpl_cuda_is_device_ptr(buf);
#ifdef MPL_HAVE_NCCL
  if (dev && chan == CHAN_P2P && w->use_nccl && me->to[dst].comm) {
    m->linked = true;
    return mpl_nccl_link_send(me, &me->to[dst], buf, bytes, err);
  }
#endif
  if (dev) return stage_device(me, m, buf, err);
  if (!(m->hbuf = mpl_malloc(bytes ? bytes : 1))) return mpl_errf(err, "out of memory");
  if (bytes) memcpy(m->hbuf, buf, bytes);
  return MPL_OK;
}

static int post(MplComm *c, int chan, int dst, uint64_t tag, const void *buf, size_t bytes) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  WorldRank *me = &w->ranks[c->rank];
  if (dst < 0 || dst >= c->size || dst == c->rank) return mpl_errf(err, "rank %d: send to bad rank %d", c->rank, dst);
  if (mpl_cuda_flush(me->cr.dev, err) != MPL_OK) return MPL_ERR; /* (MPL_CUDA_GRAPHS: the work before the send) */
  CUDA_CHECK(cudaSetDevice(me->cr.gpu));
  if (release_spent(w, me, err) != MPL_OK) return MPL_ERR;
  CMsg *m = mpl_calloc(1, sizeof *m);
  if (!m) return mpl_errf(err, "rank %d: out of memory", c->rank);
  m->mail.tag = tag, m->mail.bytes = bytes;
  if (fill_msg(w, &me->cr, chan, dst, m, buf, err) != MPL_OK ||
      mpl_mailbox_post(&w->mb, chan, c->rank, dst, &m->mail, err) != MPL_OK) {
    msg_free(m);
    return MPL_ERR;
  }
  return MPL_OK;
}

/* Hands the staging buffer of m back to its sender, freed after `done` (on an error it
 * stays with m, which msg_free frees). */
static int give_back(MplCudaWorld *w, int src, CMsg *m, cudaStream_t after, MplErr *err) {
  Spent *s = mpl_calloc(1, sizeof *s);
  if (!s) return mpl_errf(err, "out of memory");
  cudaError_t e = cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming);
  if (e == cudaSuccess && (e = cudaEventRecord(s->done, after)) != cudaSuccess) CUDA_SOFT(cudaEventDestroy(s->done));
  if (e != cudaSuccess) {
    mpl_free(s);
    cudaGetLastError();
    return mpl_errf(err, "cuda: the event after a message's copy: %s", cudaGetErrorString(e));
  }
  s->dbuf = m->dbuf;
  m->dbuf = NULL;
  pthread_mutex_lock(&w->mb.mu);
  s->next = w->ranks[src].spent;
  w->ranks[src].spent = s;
  pthread_mutex_unlock(&w->mb.mu);
  return MPL_OK;
}

/* Copies a device-copy or host message into buf (device or host) in stream order. */
static int deliver(MplCudaWorld *w, CudaRank *me, int src, CMsg *m, void *buf, MplErr *err) {
  size_t bytes = m->mail.bytes;
  bool dev_dst = bytes && mpl_cuda_is_device_ptr(buf);
  const atomic_int *stop = stop_flag(w);
  if (m->hbuf) {
    if (!dev_dst) {
      if (bytes) memcpy(buf, m->hbuf, bytes);
      return MPL_OK;
    }
    if (mpl_cuda_stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
    if (stop && mpl_cuda_wait(me->comm, NULL, stop, err) != MPL_OK) return MPL_ERR; /* a pageable copy may wait for the stream */
    CUDA_CHECK(cudaMemcpyAsync(buf, m->hbuf, bytes, cudaMemcpyHostToDevice, me->comm));
    return mpl_cuda_wait(me->comm, NULL, stop, err); /* hbuf is freed next */
  }
  if (dev_dst) {
    CUDA_CHECK(cudaStreamWaitEvent(me->comm, m->ready, 0));
    if (mpl_cuda_stream_after(me->comm, me->compute, me->mark, err) != MPL_OK) return MPL_ERR;
    if (m->dev == me->gpu) CUDA_CHECK(cudaMemcpyAsync(buf, m->dbuf, bytes, cudaMemcpyDeviceToDevice, me->comm));
    else CUDA_CHECK(cudaMemcpyPeerAsync(buf, me->gpu, m->dbuf, m->dev, bytes, me->comm));
    if (mpl_cuda_stream_after(me->compute, me->comm, me->mark, err) != MPL_OK) return MPL_ERR;
  } else { /* into host memory: synchronous, from whichever GPU holds it */
    if (mpl_cuda_wait(NULL, m->ready, stop, err) != MPL_OK) return MPL_ERR;
    CUDA_CHECK(cudaMemcpy(buf, m->dbuf, bytes, cudaMemcpyDefault));
  }
  return give_back(w, src, m, me->comm, err);
}

static int take(MplComm *c, int chan, int src, uint64_t tag, void *buf, size_t bytes) {
  MplCudaWorld *w = world_of(c);
  MplErr *err = &c->err;
  CudaRank *me = &w->ranks[c->rank].cr;
  if (src < 0 || src >= c->size || src == c->rank) return mpl_errf(err, "rank %d: recv from bad rank %d", c->rank, src);
  if (mpl_cuda_flush(me->dev, err) != MPL_OK) return MPL_ERR; /* (MPL_CUDA_GRAPHS: the work before the recv) */
  CUDA_CHECK(cudaSetDevice(me->gpu));
  CMsg *m = (CMsg *)mpl_mailbox_take(&w->mb, chan, src, c->rank, tag, bytes, err);
  if (!m) return MPL_ERR;
  int st;
#ifdef MPL_HAVE_NCCL
  if (m->linked && me->from[src].comm) st = mpl_nccl_link_recv(me, &me->from[src], buf, bytes, stop_flag(w), err);
  else
#endif
  if (m->linked) st = mpl_errf(err, "rank %d: a message from rank %d came by an NCCL link this rank does not have", c->rank, src);
  else st = deliver(w, me, src, m, buf, err);
  msg_free(m);
  return st;
}

static int cuda_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  return post(c, CHAN_P2P, dst, tag, buf, bytes);
}

static int cuda_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  return take(c, CHAN_P2P, src, tag, buf, bytes);
}

/* ---- collectives ------------------------------------------------------------------------- */

static int coll_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  return post(c, CHAN_COLL, dst, tag, buf, bytes);
}

static int coll_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  return take(c, CHAN_COLL, src, tag, buf, bytes);
}

static int coll_to_host(MplComm *c, void *host, const void *buf, size_t bytes) {
  MplDevice *d = world_of(c)->ranks[c->rank].cr.dev;
  return d->ops->copy_to_host(d, host, buf, bytes, &c->err);
}

/* A copy on the compute stream, waited for: the host scratch is reused by the next sum. */
static int coll_from_host(MplComm *c, void *buf, const void *host, size_t bytes) {
  MplDevice *d = world_of(c)->ranks[c->rank].cr.dev;
  if (d->ops->copy_from_host(d, buf, host, bytes, &c->err) != MPL_OK) return MPL_ERR;
  return d->ops->sync(d, &c->err);
}

/* Collective op over the sorted group: NCCL on the group's communicator (a device buffer,
 * a group made at init), else comm.c's, made of the world's messages. */
static int run_collective(MplComm *c, int op, const int *sorted, int k, void *buf, size_t n, size_t elem) {
  MplCudaWorld *w = world_of(c);
  WorldRank *me = &w->ranks[c->rank];
  bool dev = n && mpl_cuda_is_device_ptr(buf);
  if (op == MPL_COLL_ALLREDUCE_F64 && dev)
    return mpl_errf(&c->err, "rank %d: a float64 all-reduce takes host memory, not a device buffer", c->rank);
#ifdef MPL_HAVE_NCCL
  ncclComm_t g = w->use_nccl && dev ? mpl_nccl_group(&me->cr, sorted, k, c->size) : NULL;
  if (g) return mpl_nccl_collective(&me->cr, g, op, k, mpl_comm_slot(sorted, k, c->rank), buf, n, elem, &c->err);
#endif
  MplMsgIo io = {.c = c, .send = coll_send, .recv = coll_recv, .scratch = &me->scratch};
  if (dev) io.to_host = coll_to_host, io.from_host = coll_from_host;
  return mpl_msg_collective(&io, op, sorted, k, buf, n, elem);
}

static int cuda_collective(MplComm *c, int op, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  MplCudaWorld *w = world_of(c);
  if (mpl_cuda_flush(w->ranks[c->rank].cr.dev, &c->err) != MPL_OK) return MPL_ERR; /* (MPL_CUDA_GRAPHS) */
  if (atomic_load_explicit(&w->stop, memory_order_acquire)) /* raised after the reason is written */
    return mpl_mailbox_aborted_err(&w->mb, c->rank, &c->err);
  if (cudaSetDevice(w->ranks[c->rank].cr.gpu) != cudaSuccess) {
    cudaGetLastError();
    return mpl_errf(&c->err, "cuda: cudaSetDevice(%d) failed", w->ranks[c->rank].cr.gpu);
  }
  int *sorted = mpl_comm_sorted_members(c, ranks, k);
  if (!sorted) return MPL_ERR;
  int st = run_collective(c, op, sorted, k, buf, n, elem);
  mpl_free(sorted);
  return st;
}

static int cuda_allreduce(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return cuda_collective(c, MPL_COLL_ALLREDUCE_F32, ranks, k, buf, n, sizeof *buf);
}

static int cuda_reduce_scatter(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return cuda_collective(c, MPL_COLL_REDUCE_SCATTER_F32, ranks, k, buf, n, sizeof *buf);
}

static int cuda_allgather(MplComm *c, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  return cuda_collective(c, MPL_COLL_ALLGATHER, ranks, k, buf, n, elem);
}

static int cuda_allreduce_f64(MplComm *c, const int *ranks, int k, double *buf, size_t n) {
  return cuda_collective(c, MPL_COLL_ALLREDUCE_F64, ranks, k, buf, n, sizeof *buf);
}

/* Every rank's messages of one host float to every other (comm.c's barrier). */
static int cuda_barrier(MplComm *c) {
  MplCudaWorld *w = world_of(c);
  int *all = mpl_malloc(sizeof(int) * (size_t)c->size);
  if (!all) return mpl_errf(&c->err, "out of memory");
  for (int r = 0; r < c->size; r++) all[r] = r;
  MplMsgIo io = {.c = c, .send = coll_send, .recv = coll_recv, .scratch = &w->ranks[c->rank].scratch};
  int st = mpl_msg_collective(&io, MPL_COLL_BARRIER, all, c->size, NULL, 0, 0);
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
    .reduce_scatter_sum_f32 = cuda_reduce_scatter,
    .allgather = cuda_allgather,
    .allreduce_sum_f64 = cuda_allreduce_f64,
    .barrier = cuda_barrier,
    .abort = cuda_abort,
    .free = cuda_comm_free,
};

/* ---- the world ------------------------------------------------------------------------- */

static bool gpus_distinct(const MplCudaWorld *w) {
  for (int i = 0; i < w->mb.size; i++)
    for (int j = 0; j < i; j++)
      if (w->ranks[i].cr.gpu == w->ranks[j].cr.gpu) return false;
  return true;
}

#ifdef MPL_HAVE_NCCL
/* Every rank's NCCL side, made by this thread; the devices' waits then watch `stop`. */
static int init_nccl(MplCudaWorld *w, const MplCommMesh *mesh, MplErr *err) {
  int size = w->mb.size;
  CudaRank **r = mpl_calloc((size_t)size, sizeof *r);
  int *ids = mpl_calloc((size_t)size, sizeof *ids);
  ncclUniqueId id;
  ncclResult_t nr = ncclSuccess;
  int st = r && ids ? MPL_OK : mpl_errf(err, "out of memory");
  if (st == MPL_OK && (nr = ncclGetUniqueId(&id)) != ncclSuccess) st = mpl_nccl_fail(err, "ncclGetUniqueId", nr, __FILE__, __LINE__);
  for (int i = 0; i < size && st == MPL_OK; i++) r[i] = &w->ranks[i].cr, ids[i] = i;
  w->use_nccl = true; /* from here on the teardown looks for communicators */
  if (st == MPL_OK) st = mpl_nccl_boot(&(NcclBoot){.size = size, .n = size, .r = r, .w = ids, .mesh = mesh}, &id, err);
  for (int i = 0; i < size && st == MPL_OK; i++) mpl_cuda_set_stop(w->ranks[i].cr.dev, &w->stop);
  mpl_free(r);
  mpl_free(ids);
  return st;
}
#endif

/* Lets every pair of distinct GPUs in the world copy directly (where the hardware can),
 * the stream-ordered pool's memory (staging buffers, arenas) included: the pool does not
 * follow cudaDeviceEnablePeerAccess, its access is granted per device. */
static void enable_peers(MplCudaWorld *w) {
  for (int i = 0; i < w->mb.size; i++)
    for (int j = 0; j < w->mb.size; j++) {
      int a = w->ranks[i].cr.gpu, b = w->ranks[j].cr.gpu, can = 0;
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

/* On error *out is the half-made world: the caller frees it (mpl_cuda_world_free). */
int mpl_cuda_world_init(MplCudaWorld **out, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  if (nranks < 1 || nranks > 4096) return mpl_errf(err, "cuda communicator: bad rank count %d", nranks);
  MplCudaWorld *w = mpl_calloc(1, sizeof *w);
  if (!w) return mpl_errf(err, "out of memory");
  w->ranks = mpl_calloc((size_t)nranks, sizeof *w->ranks);
  w->comms = mpl_calloc((size_t)nranks, sizeof *w->comms);
  if (!w->ranks || !w->comms || mpl_mailbox_init(&w->mb, nranks, NCHAN, err) != MPL_OK) {
    mpl_free(w->ranks), mpl_free(w->comms), mpl_free(w);
    return mpl_errf(err, "out of memory");
  }
  w->mb.wake = raise_stop, w->mb.owner = w;
  atomic_init(&w->stop, 0);
  *out = w;
  for (int r = 0; r < nranks; r++) {
    w->comms[r] = (MplComm){.ops = &cuda_comm_ops, .rank = r, .size = nranks, .impl = w};
    if (mpl_cuda_rank_init(&w->ranks[r].cr, devs[r], err) != MPL_OK) return MPL_ERR;
  }
  enable_peers(w);
  int mode;
  if (mpl_nccl_mode(&mode, err) != MPL_OK) return MPL_ERR;
  if (!mpl_nccl_wanted(mode, nranks, gpus_distinct(w))) return MPL_OK;
#ifdef MPL_HAVE_NCCL
  if (init_nccl(w, mesh, err) != MPL_OK) {
    atomic_store(&w->stop, 1); /* the free aborts what was made */
    return gpus_distinct(w) ? MPL_ERR : mpl_nccl_shared_gpu_hint(err);
  }
#endif
  return MPL_OK;
}

MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r) { return r >= 0 && r < w->mb.size ? &w->comms[r] : NULL; }

/* An undelivered message, freed with the world (its copy may still run: the GPU waits). */
static void drop_msg(MplMail *mail) {
  CMsg *m = (CMsg *)mail;
  if (m->dbuf) {
    CUDA_SOFT(cudaSetDevice(m->dev));
    CUDA_SOFT(cudaDeviceSynchronize());
  }
  msg_free(m);
}

/* A rank's spent staging buffers, freed synchronously, and its CUDA side. */
static void free_rank(WorldRank *wr) {
  CudaRank *cr = &wr->cr;
  mpl_scratch_free(&wr->scratch);
  if (!cr->dev) return;
  CUDA_SOFT(cudaSetDevice(cr->gpu));
  CUDA_SOFT(cudaDeviceSynchronize());
  for (Spent *s = wr->spent, *next; s; s = next) {
    next = s->next;
    CUDA_SOFT(cudaFree(s->dbuf));
    CUDA_SOFT(cudaEventDestroy(s->done));
    mpl_free(s);
  }
  wr->spent = NULL;
  mpl_cuda_rank_free(cr);
}

/* After every rank thread stopped: NCCL ended (destroyed after the streams drain, or
 * aborted after a failure), then undelivered messages and spent buffers are freed
 * synchronously. */
void mpl_cuda_world_free(MplCudaWorld *w) {
  if (!w) return;
  int size = w->mb.size;
  for (int r = 0; r < size; r++) /* (MPL_CUDA_GRAPHS: a failed run's open captures, before any sync) */
    if (w->ranks[r].cr.dev) mpl_cuda_drop(w->ranks[r].cr.dev);
#ifdef MPL_HAVE_NCCL
  bool abort = atomic_load(&w->stop) != 0;
  for (int r = 0; r < size; r++) {
    if (!w->ranks[r].cr.dev) continue;
    mpl_cuda_set_stop(w->ranks[r].cr.dev, NULL);
    if (w->use_nccl && !abort) mpl_nccl_quiesce(&w->ranks[r].cr, size);
  }
  for (int r = 0; w->use_nccl && r < size; r++) mpl_nccl_free_rank(&w->ranks[r].cr, size, abort);
#endif
  mpl_mailbox_free(&w->mb, drop_msg);
  for (int r = 0; r < size; r++) free_rank(&w->ranks[r]);
  mpl_free(w->ranks);
  mpl_free(w->comms);
  mpl_free(w);
}

#else /* !MPL_HAVE_CUDA */

int mpl_cuda_world_init(MplCudaWorld **out, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  return mpl_errf(err, "this mplrun was built without CUDA");
}
MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r) { return NULL; }
void mpl_cuda_world_abort(MplCudaWorld *w, const char *why) {}
void mpl_cuda_world_free(MplCudaWorld *w) {}

#endif
