/*
 * comm_cuda.h — private to the communicators of ranks on CUDA devices, in sections named
 * after the files that define them:
 *   comm_nccl.c        a rank's CUDA side (device, streams), the MPL_NCCL choice, and
 *                      everything that talks to NCCL: boot, links, groups, collectives
 *   comm_cuda_world.c  the threads' world: the device mailbox, host sums (entry points
 *                      in comm.h)
 *   comm_cuda_mpi.c    one rank per process: NCCL, or host staging over MPI (comm.h)
 * Included only when MPL_HAVE_CUDA is defined. Every function takes the MplErr it fills.
 */
#ifndef MPL_COMM_CUDA_H
#define MPL_COMM_CUDA_H

#include "comm_int.h"
#include "cuda_rt.h"

#ifdef MPL_HAVE_NCCL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes" /* nccl.h declares f() */
#include <nccl.h>
#pragma GCC diagnostic pop

#define NCCL_CHECK(call)                                                             \
  do {                                                                               \
    ncclResult_t n_ = (call);                                                        \
    if (n_ != ncclSuccess) return mpl_nccl_fail(err, #call, n_, __FILE__, __LINE__); \
  } while (0)
#define HAVE_SPLIT (NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0))

/* One direction of one pair: a two-rank communicator (the sender is its rank 0) and the
 * stream its operations run on, on this rank's GPU. */
typedef struct NcclLink {
  ncclComm_t comm;
  cudaStream_t stream;
} NcclLink;

/* A collective group's communicator; ranks: its world ranks, ascending (= NCCL's ranks). */
typedef struct NcclGroup {
  struct NcclGroup *next;
  int k;
  int *ranks;
  ncclComm_t comm;
} NcclGroup;
#endif

/* ==== comm_nccl.c ===================================================== */

/* A rank's CUDA side, in either world. */
typedef struct CudaRank {
  MplDevice *dev;
  int gpu;
  cudaStream_t compute, comm; /* the device's streams (kernels; messages and collectives) */
  cudaEvent_t mark;           /* re-recorded: "this stream has reached here" */
#ifdef MPL_HAVE_NCCL
  void *scratch;              /* 256 bytes of device memory: the warm-ups */
  ncclComm_t world;
  NcclLink *to, *from;        /* [size]: the links to and from each rank (comm NULL: none) */
  NcclGroup *groups;
#endif
} CudaRank;

/* The rank on cuda device d (initialised, d->ops == &mpl_device_cuda_ops); _free: its event. */
int mpl_cuda_rank_init(CudaRank *cr, MplDevice *d, MplErr *err);
void mpl_cuda_rank_free(CudaRank *cr);
/* Makes `waiter` wait for everything queued on `stream` so far (mark: an event to record). */
int mpl_cuda_stream_after(cudaStream_t waiter, cudaStream_t stream, cudaEvent_t mark, MplErr *err);

/* MPL_NCCL: unset, "" or "auto": NCCL where it fits; "1": always; "0": never. */
enum { MPL_NCCL_OFF = 0, MPL_NCCL_ON = 1, MPL_NCCL_AUTO = 2 };
int mpl_nccl_mode(int *mode, MplErr *err);
/* Does a world of size ranks (distinct: on distinct GPUs) use NCCL under mode? */
bool mpl_nccl_wanted(int mode, int size, bool distinct);

#ifdef MPL_HAVE_NCCL
/* NCCL's message for r, with its last error's detail ("Duplicate GPU detected ..."). */
int mpl_nccl_fail(MplErr *err, const char *call, ncclResult_t r, const char *file, int line);
/* Adds why to a failed NCCL set-up when the ranks share GPUs (only MPL_NCCL=1 tries it). */
int mpl_nccl_shared_gpu_hint(MplErr *err);

/* The ranks this process drives in the collective set-up calls: all of the world's
 * (threads: each call in one NCCL group, as one thread drives several GPUs) or its own. */
typedef struct NcclBoot {
  int size, n;
  CudaRank *const *r; /* [n] */
  const int *w;       /* [n] their world ranks */
  const MplCommMesh *mesh;
} NcclBoot;
/* The NCCL side of the ranks b drives: the world's communicator from id, then (a mesh that
 * fits the world, NCCL >= 2.18) its groups and links; everything warmed up. On error what
 * was made stays in the ranks for the teardown (mpl_nccl_free_rank). */
int mpl_nccl_boot(const NcclBoot *b, const ncclUniqueId *id, MplErr *err);
/* Waits (plainly: nothing failed) until the rank's streams, links' included, are idle. */
void mpl_nccl_quiesce(CudaRank *cr, int size);
/* Ends a rank's NCCL communicators: destroyed (after quiesce), or aborted, which ends
 * operations that wait for a rank that will not come; then its link streams and scratch. */
void mpl_nccl_free_rank(CudaRank *cr, int size, bool abort);

/* A device buffer over link l (this rank is its sender): staged, so buf is reusable. */
int mpl_nccl_link_send(CudaRank *me, NcclLink *l, const void *buf, size_t bytes, MplErr *err);
/* A message over link l (this rank is its receiver) into buf; a host buf goes through a
 * device buffer, waited for with the stop flag (NULL under MPI). */
int mpl_nccl_link_recv(CudaRank *me, NcclLink *l, void *buf, size_t bytes, const atomic_int *stop, MplErr *err);
/* The communicator of the group with these sorted members, or NULL (not made at init). */
ncclComm_t mpl_nccl_group(const CudaRank *me, const int *sorted, int k, int size);
/* Collective op (comm_int.h's MplCollOp: the f32 all-reduce, reduce-scatter, all-gather)
 * of device buffer buf on the group's communicator, whose NCCL rank of this member must be
 * slot (checked), on the rank's comm stream between its compute stream's work. */
int mpl_nccl_collective(CudaRank *me, ncclComm_t comm, int op, int k, int slot, void *buf, size_t n, size_t elem,
                        MplErr *err);
#endif

#endif
