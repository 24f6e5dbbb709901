/*
 * comm_cuda_mpi.c — the communicator of one rank per process (under mpirun) on its cuda
 * device, over the process's MPI communicator (comm_mpi.c): mpl_cuda_mpi_init (comm.h).
 *
 * Which way a device message or collective goes:
 *  - NCCL (comm_nccl.c), when the world uses it — every rank of the job on its own GPU
 *    (host name and PCI bus id, allgathered at init) and NCCL built in, or MPL_NCCL=1 (rank
 *    0's setting decides for every process) — and the mesh made a link for the pair or a
 *    communicator for the group. A message's header (its size, "on the link") goes over
 *    MPI first; the receiver checks it, then posts ncclRecv on the link;
 *  - else host staging: a device buffer is copied to host memory and sent over MPI (the
 *    MPI communicator copies it: the staging buffer is reusable at once), and received
 *    into host memory, then copied to the device on the compute stream. A collective
 *    stages only what it reads (the whole buffer, or this member's chunk for an
 *    all-gather) and copies back only what it wrote (this member's chunk for a
 *    reduce-scatter), and the MPI communicator sums in ascending rank order: the threads'
 *    bits;
 *  - host buffers (the gradient norms, the float64 all-reduce) always go over MPI.
 *
 * Failure: abort is MPI's (MPI_Abort: the job ends). The free of a communicator that saw
 * an error aborts its NCCL communicators instead of waiting for them. Every CUDA, NCCL
 * and MPI call is checked, with a message that names it.
 */
#include "exec.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MPL_HAVE_CUDA

#include "comm_cuda.h"

typedef struct CudaMpi {
  MplComm comm;          /* ops = cuda_mpi_ops; rank and size are mpi's */
  MplComm *mpi;          /* the process's MPI communicator: host messages (not owned) */
  CudaRank me;
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
  CudaRank *me = &m->me;
  MplComm *mpi = m->mpi;
  CUDA_CHECK(cudaSetDevice(me->gpu));
  bool dev = bytes && mpl_cuda_is_device_ptr(buf);
  MsgHead h = {.bytes = bytes};
#ifdef MPL_HAVE_NCCL
  if (dev && m->use_nccl && me->to[dst].comm) {
    if (mpl_nccl_link_send(me, &me->to[dst], buf, bytes, err) != MPL_OK) return MPL_ERR;
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
  CudaRank *me = &m->me;
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
    if (m->use_nccl && me->from[src].comm) return mpl_nccl_link_recv(me, &me->from[src], buf, bytes, NULL, err);
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
  int st = mpl_cuda_flush(m->me.dev, &c->err); /* (MPL_CUDA_GRAPHS: the work before the send) */
  if (st == MPL_OK) st = cm_send_body(m, dst, tag, buf, bytes);
  m->failed |= st != MPL_OK;
  return st;
}

static int cm_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  CudaMpi *m = c->impl;
  if (src < 0 || src >= c->size || src == c->rank) return mpl_errf(&c->err, "rank %d: recv from bad rank %d", c->rank, src);
  int st = mpl_cuda_flush(m->me.dev, &c->err); /* (MPL_CUDA_GRAPHS: the work before the recv) */
  if (st == MPL_OK) st = cm_recv_body(m, src, tag, buf, bytes);
  m->failed |= st != MPL_OK;
  return st;
}

/* Collective op of the MPI communicator on a host buffer. */
static int mpi_collective(MplComm *mpi, int op, const int *sorted, int k, void *buf, size_t n, size_t elem) {
  switch (op) {
  case MPL_COLL_ALLREDUCE_F32: return mpi->ops->allreduce_sum_f32(mpi, sorted, k, buf, n);
  case MPL_COLL_REDUCE_SCATTER_F32: return mpi->ops->reduce_scatter_sum_f32(mpi, sorted, k, buf, n);
  case MPL_COLL_ALLGATHER: return mpi->ops->allgather(mpi, sorted, k, buf, n, elem);
  case MPL_COLL_ALLREDUCE_F64: return mpi->ops->allreduce_sum_f64(mpi, sorted, k, buf, n);
  default: return mpl_errf(&mpi->err, "rank %d: no %s over MPI", mpi->rank, mpl_coll_name(op));
  }
}

/* A device buffer through host memory: what the collective reads (the whole buffer, or
 * this member's chunk for an all-gather) to the host, the MPI collective there, and what
 * it wrote (the whole buffer, or this member's chunk for a reduce-scatter) back. */
static int staged_collective(CudaMpi *m, int op, const int *sorted, int k, uint8_t *buf, size_t n, size_t elem) {
  MplErr *err = &m->comm.err;
  MplDevice *d = m->me.dev;
  size_t lo, len;
  mpl_comm_chunk(n, k, mpl_comm_slot(sorted, k, m->comm.rank), &lo, &len);
  size_t in_lo = op == MPL_COLL_ALLGATHER ? lo : 0, in_len = op == MPL_COLL_ALLGATHER ? len : n;
  size_t out_lo = op == MPL_COLL_REDUCE_SCATTER_F32 ? lo : 0, out_len = op == MPL_COLL_REDUCE_SCATTER_F32 ? len : n;
  uint8_t *hs = host_stage(m, n * elem);
  if (!hs) return mpl_errf(err, "rank %d: out of memory staging %zu bytes", m->comm.rank, n * elem);
  if (d->ops->copy_to_host(d, hs + in_lo * elem, buf + in_lo * elem, in_len * elem, err) != MPL_OK ||
      over_mpi(m, mpi_collective(m->mpi, op, sorted, k, hs, n, elem), err) != MPL_OK)
    return MPL_ERR;
  return d->ops->copy_from_host(d, buf + out_lo * elem, hs + out_lo * elem, out_len * elem, err); /* hs reusable on return */
}

/* Device buffers: NCCL on the group's communicator, else staged through the host; host
 * buffers: the MPI communicator's (ascending rank order). Every member passes the same
 * kind of buffer (they run the same program on the same kind of device). */
static int cm_collective_body(CudaMpi *m, int op, const int *sorted, int k, void *buf, size_t n, size_t elem) {
  MplErr *err = &m->comm.err;
  CudaRank *me = &m->me;
  if (k == 1 || n == 0) return MPL_OK;
  CUDA_CHECK(cudaSetDevice(me->gpu));
  bool dev = mpl_cuda_is_device_ptr(buf);
  if (dev && op == MPL_COLL_ALLREDUCE_F64)
    return mpl_errf(err, "rank %d: a float64 all-reduce takes host memory, not a device buffer", m->comm.rank);
#ifdef MPL_HAVE_NCCL
  ncclComm_t g = dev && m->use_nccl ? mpl_nccl_group(me, sorted, k, m->comm.size) : NULL;
  if (g) return mpl_nccl_collective(me, g, op, k, mpl_comm_slot(sorted, k, m->comm.rank), buf, n, elem, err);
#endif
  if (!dev) return over_mpi(m, mpi_collective(m->mpi, op, sorted, k, buf, n, elem), err);
  return staged_collective(m, op, sorted, k, buf, n, elem);
}

static int cm_collective(MplComm *c, int op, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  CudaMpi *m = c->impl;
  if (mpl_cuda_flush(m->me.dev, &c->err) != MPL_OK) { /* (MPL_CUDA_GRAPHS) */
    m->failed = true;
    return MPL_ERR;
  }
  int *sorted = mpl_comm_sorted_members(c, ranks, k);
  if (!sorted) return MPL_ERR;
  int st = cm_collective_body(m, op, sorted, k, buf, n, elem);
  mpl_free(sorted);
  m->failed |= st != MPL_OK;
  return st;
}

static int cm_allreduce(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return cm_collective(c, MPL_COLL_ALLREDUCE_F32, ranks, k, buf, n, sizeof *buf);
}

static int cm_reduce_scatter(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return cm_collective(c, MPL_COLL_REDUCE_SCATTER_F32, ranks, k, buf, n, sizeof *buf);
}

static int cm_allgather(MplComm *c, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  return cm_collective(c, MPL_COLL_ALLGATHER, ranks, k, buf, n, elem);
}

static int cm_allreduce_f64(MplComm *c, const int *ranks, int k, double *buf, size_t n) {
  return cm_collective(c, MPL_COLL_ALLREDUCE_F64, ranks, k, buf, n, sizeof *buf);
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
  CudaRank *cr = &m->me;
  mpl_cuda_drop(cr->dev); /* (MPL_CUDA_GRAPHS: a failed run's open capture, before any sync) */
#ifdef MPL_HAVE_NCCL
  if (m->use_nccl && !m->failed) mpl_nccl_quiesce(cr, c->size);
  if (m->use_nccl) mpl_nccl_free_rank(cr, c->size, m->failed);
#endif
  mpl_cuda_rank_free(cr);
  mpl_free(m->host);
  mpl_free(m);
}

static const MplCommOps cuda_mpi_ops = {
    .name = "cuda+mpi",
    .send = cm_send,
    .recv = cm_recv,
    .allreduce_sum_f32 = cm_allreduce,
    .reduce_scatter_sum_f32 = cm_reduce_scatter,
    .allgather = cm_allgather,
    .allreduce_sum_f64 = cm_allreduce_f64,
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
  CudaRank *me = &m->me;
  int w = m->comm.rank;
  return mpl_nccl_boot(&(NcclBoot){.size = m->comm.size, .n = 1, .r = &me, .w = &w, .mesh = mesh}, &u.id, err);
}
#endif

int mpl_cuda_mpi_init(MplComm **out, MplComm *mpi, MplDevice *dev, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  CudaMpi *m = mpl_calloc(1, sizeof *m);
  if (!m) return mpl_errf(err, "out of memory");
  m->comm = (MplComm){.ops = &cuda_mpi_ops, .rank = mpi->rank, .size = mpi->size, .impl = m};
  m->mpi = mpi;
  *out = &m->comm; /* freed by the caller, also after an error */
  int mode = MPL_NCCL_AUTO, mode0 = MPL_NCCL_AUTO;
  bool distinct = false;
  if (mpl_cuda_rank_init(&m->me, dev, err) != MPL_OK || mpl_nccl_mode(&mode, err) != MPL_OK ||
      gather_gpus(m, mode, &distinct, &mode0, err) != MPL_OK)
    return MPL_ERR;
  m->use_nccl = mpl_nccl_wanted(mode0, m->comm.size, distinct); /* rank 0's MPL_NCCL: every process alike */
  if (!m->use_nccl) return MPL_OK;
#ifdef MPL_HAVE_NCCL
  if (mpi_nccl(m, mesh, err) != MPL_OK) {
    m->failed = true;
    return distinct ? MPL_ERR : mpl_nccl_shared_gpu_hint(err);
  }
#endif
  return MPL_OK;
}


#else /* !MPL_HAVE_CUDA */

int mpl_cuda_mpi_init(MplComm **out, MplComm *mpi, MplDevice *dev, const MplCommMesh *mesh, MplErr *err) {
  *out = NULL;
  return mpl_errf(err, "this mplrun was built without CUDA");
}

#endif
