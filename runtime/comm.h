/*
 * comm.h — the backend interface of communicators, and the entry points that make them.
 * A communicator is one MplCommOps table per kind, filled with designated initializers:
 *   local     ranks that are threads of one process (comm_local.c)
 *   mpi       one rank per process under mpirun (comm_mpi.c)
 *   cuda      ranks on CUDA devices that are threads of one process (comm_cuda_world.c)
 *   cuda+mpi  one rank per process on its CUDA device, over mpi (comm_cuda_mpi.c)
 * The cuda kinds use NCCL where it fits (comm_nccl.c). What they share is comm.c (the
 * group check, the chunk rule, collectives made of messages) and mailbox.c (the FIFO per
 * pair of the in-process kinds), declared in the private comm_int.h.
 *
 * What every communicator means (the executor relies on it, the tests check it):
 *  - ranks are 0 .. size-1; an op names its peer or its group by world rank;
 *  - send is eager: the bytes are copied (or staged) before it returns and it never waits
 *    for the receiver, so the caller may reuse its buffer at once and sending everything
 *    before receiving cannot deadlock;
 *  - recv blocks until the next message from src; the messages of a (src, dst) pair arrive
 *    in the order they were sent (FIFO), and a recv names the tag and size it expects: a
 *    mismatch means the ranks disagree about the program, an error that ends the world
 *    (never a hang, never a silent wrong match);
 *  - a collective names its group: the members' world ranks in any order, no duplicate,
 *    the caller among them (mpl_comm_sorted_members checks it). Every member calls the
 *    same collective with the same n (and elem), and the collectives of one group in the
 *    same order. Collectives never match point-to-point messages;
 *  - chunks: with k members and n elements, member i (the i-th in ascending rank order)
 *    owns chunk i = [n*i/k, n*(i+1)/k) (mpl_comm_chunk; uneven when k does not divide n;
 *    a chunk may be empty);
 *  - sums add the members' values in ascending rank order, element by element
 *    (x0 + x1 + x2 ...), so every member gets the same bits whatever the arrival order,
 *    and a reduce-scatter's chunk has the bits of the same chunk of the all-reduce.
 *    One exception: where NCCL runs a sum (cuda kinds, device buffers, every rank on its
 *    own GPU) the order is NCCL's own;
 *  - buffers are host memory, except under the cuda kinds, where send, recv and the
 *    f32 all-reduce, reduce-scatter and all-gather take device pointers as well;
 *    allreduce_sum_f64 takes host memory only;
 *  - abort (from any rank's thread) makes every blocked op and every later op fail with
 *    the reason; under MPI it ends the job (MPI_Abort).
 * Every op returns MPL_OK or MPL_ERR with the message in c->err.
 */
#ifndef MPL_COMM_H
#define MPL_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpl.h" /* MplErr, the allocator (mpl.h includes this header at its end) */

typedef struct MplComm MplComm;

typedef struct MplCommOps {
  const char *name;
  int (*send)(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes);
  int (*recv)(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes);
  /* In place: every member's buf[0..n) becomes the members' sum (rank order). */
  int (*allreduce_sum_f32)(MplComm *c, const int *ranks, int nranks, float *buf, size_t n);
  /* In place: every member passes its whole buf[0..n); afterwards this member's own chunk
   * of buf holds the members' sum of that chunk, added in ascending rank order (the bits
   * of allreduce_sum_f32); the rest of buf is left as it was. */
  int (*reduce_scatter_sum_f32)(MplComm *c, const int *ranks, int k, float *buf, size_t n);
  /* In place: member i's chunk of buf[0..n) (elements of elem bytes) is its contribution;
   * afterwards every member's buf holds every chunk. */
  int (*allgather)(MplComm *c, const int *ranks, int k, void *buf, size_t n, size_t elem);
  /* As allreduce_sum_f32, for float64 in host memory: summed in ascending rank order. */
  int (*allreduce_sum_f64)(MplComm *c, const int *ranks, int k, double *buf, size_t n);
  int (*barrier)(MplComm *c);
  void (*abort)(MplComm *c, const char *why);
  void (*free)(MplComm *c);
} MplCommOps;

struct MplComm {
  const MplCommOps *ops;
  int rank, size;
  void *impl;
  MplErr err; /* the message of the last failed op */
};

/* ==== comm.c ========================================================== */

/* The members of a group in ascending rank order, checked (in range, no duplicate, the
 * caller among them); mpl_malloc'd. NULL with the message in c->err. */
int *mpl_comm_sorted_members(MplComm *c, const int *ranks, int k);

/* Member i's chunk of n elements among k members: [*lo, *lo + *len). */
static inline void mpl_comm_chunk(size_t n, int k, int i, size_t *lo, size_t *len) {
  *lo = n * (size_t)i / (size_t)k;
  *len = n * (size_t)(i + 1) / (size_t)k - *lo;
}

/* ==== comm_local.c ==================================================== */

/* The in-process world: nranks ranks that are threads of this process. */
typedef struct MplCommWorld MplCommWorld;
extern const MplCommOps mpl_comm_local_ops;

int mpl_comm_world_init(MplCommWorld **w, int nranks, MplErr *err);
/* Waits spin before they sleep when the process's threads (all ranks' compute threads
 * together; init assumes one per rank) fit its cores; MPL_WAIT_SPIN_US overrides
 * (mailbox.c says why). Before the ranks start. */
void mpl_comm_world_set_spin(MplCommWorld *w, int threads);
/* Frees the world; every rank thread must have stopped using it. */
void mpl_comm_world_free(MplCommWorld *w);
/* Rank r's handle (owned by the world; its ops->free is a no-op). */
MplComm *mpl_comm_world_rank(MplCommWorld *w, int r);
/* Wakes every blocked rank with an error; later ops fail too. Thread-safe, idempotent. */
void mpl_comm_world_abort(MplCommWorld *w, const char *why);

/* ==== comm_mpi.c ====================================================== */

/* The communicator of one rank per process under mpirun (MPI_COMM_WORLD's rank and size).
 * Same semantics as the local one: eager sends (copied, completed later), FIFO per pair
 * with tags checked, sums in ascending rank order (never MPI_Allreduce's own order);
 * abort prints the reason and calls MPI_Abort. */
extern const MplCommOps mpl_comm_mpi_ops;
/* Started by mpirun or another PMI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK)? */
bool mpl_mpi_launched(void);
/* MPI_Init_thread (FUNNELED: only the process's main thread calls MPI) and the
 * process's communicator. Built without MPI (MPL_HAVE_MPI unset): MPL_ERR with a message. */
int mpl_comm_mpi_init(MplComm **out, int *argc, char ***argv, MplErr *err);
/* Waits for the pending sends, frees the communicator and calls MPI_Finalize. */
void mpl_comm_mpi_finalize(MplComm *c);
/* The rank among the processes on this host (picks a GPU: local rank mod the GPU count). */
int mpl_comm_mpi_local_rank(const MplComm *c);
/* Collectives of bytes over every process (MPI_Bcast from root, MPI_Allgather of `bytes`
 * from each into all[size * bytes]); every process calls them in the same order. */
int mpl_comm_mpi_bcast(MplComm *c, int root, void *buf, size_t bytes);
int mpl_comm_mpi_allgather(MplComm *c, const void *mine, void *all, size_t bytes);

/* ==== comm_cuda_world.c, comm_cuda_mpi.c ================================ */

typedef struct MplDevice MplDevice; /* exec.h: a device backend's instance */

/* The mesh of the world (exec.c's world ranks: w = (replica * tp + tp index) * pp + pipeline
 * rank): the groups whose NCCL communicators are made at init — tp and dp collective
 * groups, and a link per ordered pair of ranks that exchange messages (the ranks of one
 * pipeline). NULL: the whole world only. */
typedef struct MplCommMesh {
  int dp, tp, pp;
} MplCommMesh;

/* The communicator of ranks that are threads of this process, each on a CUDA device
 * (several ranks may share one). Buffers may be device or host pointers. With NCCL built
 * in and every rank on its own GPU (or MPL_NCCL=1), device messages go through ncclSend /
 * ncclRecv and device collectives of the mesh's groups through NCCL; otherwise they are
 * device copies on each rank's communication stream (ordered after its compute stream by
 * events) and host sums. devs[r] must be initialised cuda devices that outlive the world. */
typedef struct MplCudaWorld MplCudaWorld;
int mpl_cuda_world_init(MplCudaWorld **w, int nranks, MplDevice *const *devs, const MplCommMesh *mesh, MplErr *err);
MplComm *mpl_cuda_world_rank(MplCudaWorld *w, int r);
void mpl_cuda_world_abort(MplCudaWorld *w, const char *why);
void mpl_cuda_world_free(MplCudaWorld *w);
/* Under mpirun, this process's rank on its cuda device `dev`, over the process's MPI
 * communicator `mpi` (which it uses and does not own: free it after this one, with
 * ops->free). When every rank of the job is on its own GPU (host name and PCI bus id,
 * allgathered) and NCCL is built in, or MPL_NCCL=1: rank 0's ncclGetUniqueId is
 * broadcast over MPI, ncclCommInitRank makes the world's communicator, and device
 * messages and collectives go through NCCL. Otherwise device buffers are staged through
 * host memory and sent over `mpi` (correct, slower). abort is mpi's (MPI_Abort). */
int mpl_cuda_mpi_init(MplComm **out, MplComm *mpi, MplDevice *dev, const MplCommMesh *mesh, MplErr *err);

#endif
