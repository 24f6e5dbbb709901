/*
 * comm_mpi.c — the MPI communicator: one rank per process (under mpirun), behind the
 * MplCommOps table like the in-process one (comm_local.c), with the same semantics.
 *
 * Invariants:
 *  - send is eager: the bytes are copied into an owned block (a 16-byte header with the
 *    64-bit tag and the size, then the payload) sent with MPI_Isend: the header, then the
 *    payload in pieces of at most 1 GiB (MPI's counts are ints; MPL_MPI_PIECE=BYTES sets
 *    a smaller piece, for tests), received in the same pieces; the blocks of completed
 *    sends are freed at later sends, and all of them are waited for at free. So the
 *    caller may reuse its buffer at once and a send never waits for the receiver;
 *  - recv takes the header first and checks the tag and size against the request (a
 *    mismatch means the ranks disagree about the program: an error, never a hang), then
 *    receives the payload straight into the caller's buffer. MPI's non-overtaking rule
 *    keeps the (src, dst) FIFO order of the in-process communicator;
 *  - point-to-point messages and the collectives' messages use different MPI tags, so a
 *    pipeline message and a collective between the same two ranks never match each other;
 *  - the collectives (all-reduces in f32 and f64, reduce-scatter, all-gather) are made of
 *    this communicator's own eager messages on the collectives' MPI tag (comm.c's
 *    mpl_msg_collective): every member sends each other member what it needs (the whole
 *    buffer, or chunks only), then adds the parts in ascending rank order, element by
 *    element, exactly as comm_local's sum (s = x0; s += x1; ...): the bits are those of the
 *    threads run, whatever the arrival order (MPI's reductions fix no order: not used);
 *  - every MPI call is checked (MPI_CHECK, with MPI_ERRORS_RETURN on the world); abort
 *    prints the reason and calls MPI_Abort, so no process of the job is left waiting;
 *  - for the CUDA communicator over this one (comm_cuda_mpi.c): the rank's index on its host
 *    (found once at init, MPI_Comm_split_type SHARED), and two collectives of bytes
 *    (MPI_Bcast, MPI_Allgather) that every process calls in the same order at start-up.
 * Built without MPI (no MPL_HAVE_MPI), init fails with "built without MPI".
 */
#include "comm_int.h"

#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

bool mpl_mpi_launched(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

#ifdef MPL_HAVE_MPI

#include <limits.h>
#include <mpi.h>

enum { TAG_P2P = 1, TAG_COLL = 2 };

typedef struct MsgHeader {
  uint64_t tag, bytes;
} MsgHeader;

typedef struct PendingSend {
  uint8_t *mem;      /* nreq requests, then the block (header and payload) */
  MPI_Request *req;  /* the header's, then each piece's */
  int nreq;
} PendingSend;

typedef struct MpiComm {
  MplComm comm;
  PendingSend *pend;
  int npend, cap;
  size_t piece;       /* the largest payload piece one MPI call moves (<= INT_MAX) */
  MplScratch scratch; /* the collectives' sums */
  int local_rank;     /* among the processes on this host */
} MpiComm;

static MpiComm *mpi_of(MplComm *c) { return c->impl; }

#define MPI_CHECK(c, call)                                                                              \
  do {                                                                                                  \
    int e_ = (call);                                                                                    \
    if (e_ != MPI_SUCCESS) {                                                                            \
      char s_[MPI_MAX_ERROR_STRING];                                                                    \
      int l_ = 0;                                                                                       \
      MPI_Error_string(e_, s_, &l_);                                                                    \
      return mpl_errf(&(c)->err, "rank %d: %s failed: %s (%s:%d)", (c)->rank, #call, s_, __FILE__, __LINE__); \
    }                                                                                                   \
  } while (0)

/* Frees the blocks of the sends that have completed (keeps the others in order; after a
 * failed test too, so that free waits for each pending send once). */
static int reap_sends(MplComm *c) {
  MpiComm *m = mpi_of(c);
  int k = 0, e = MPI_SUCCESS;
  for (int i = 0; i < m->npend; i++) {
    int done = 0;
    if (e == MPI_SUCCESS) e = MPI_Testall(m->pend[i].nreq, m->pend[i].req, &done, MPI_STATUSES_IGNORE);
    if (done) mpl_free(m->pend[i].mem);
    else m->pend[k++] = m->pend[i];
  }
  m->npend = k;
  if (e != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(e, msg, &len);
    return mpl_errf(&c->err, "rank %d: MPI_Testall of a pending send failed: %s", c->rank, msg);
  }
  return MPL_OK;
}

/* The pieces a payload of `bytes` goes in (one, empty, for none), and piece i's length. */
static size_t npieces(const MpiComm *m, size_t bytes) { return bytes ? (bytes + m->piece - 1) / m->piece : 1; }
static int piece_len(const MpiComm *m, size_t bytes, size_t i) {
  size_t off = i * m->piece;
  return (int)(bytes - off < m->piece ? bytes - off : m->piece);
}

static int post_send(MplComm *c, int dst, int mtag, uint64_t tag, const void *buf, size_t bytes) {
  MpiComm *m = mpi_of(c);
  if (dst < 0 || dst >= c->size) return mpl_errf(&c->err, "rank %d: send to bad rank %d", c->rank, dst);
  size_t np = npieces(m, bytes);
  if (np >= INT_MAX / 2) return mpl_errf(&c->err, "rank %d: a message of %zu bytes is too large for MPI", c->rank, bytes);
  if (reap_sends(c) != MPL_OK) return MPL_ERR;
  if (m->npend == m->cap) {
    int nc = m->cap ? m->cap * 2 : 64;
    PendingSend *p = mpl_realloc(m->pend, (size_t)nc * sizeof *p);
    if (!p) return mpl_errf(&c->err, "rank %d: out of memory", c->rank);
    m->pend = p;
    m->cap = nc;
  }
  size_t roff = ((1 + np) * sizeof(MPI_Request) + 15) / 16 * 16;
  uint8_t *mem = mpl_malloc(roff + sizeof(MsgHeader) + bytes), *block = mem + roff;
  if (!mem) return mpl_errf(&c->err, "rank %d: out of memory sending %zu bytes", c->rank, bytes);
  MsgHeader h = {.tag = tag, .bytes = bytes};
  memcpy(block, &h, sizeof h);
  if (bytes) memcpy(block + sizeof h, buf, bytes);
  PendingSend *p = &m->pend[m->npend];
  *p = (PendingSend){mem, (MPI_Request *)mem, (int)(1 + np)};
  for (int i = 0; i < p->nreq; i++) p->req[i] = MPI_REQUEST_NULL;
  m->npend++; /* from here on, free waits for it (or for what was posted of it) */
  MPI_CHECK(c, MPI_Isend(block, (int)sizeof h, MPI_BYTE, dst, mtag, MPI_COMM_WORLD, &p->req[0]));
  for (size_t i = 0; i < np; i++)
    MPI_CHECK(c, MPI_Isend(block + sizeof h + i * m->piece, piece_len(m, bytes, i), MPI_BYTE, dst, mtag, MPI_COMM_WORLD,
                           &p->req[1 + i]));
  return MPL_OK;
}

static int take_recv(MplComm *c, int src, int mtag, uint64_t tag, void *buf, size_t bytes) {
  if (src < 0 || src >= c->size) return mpl_errf(&c->err, "rank %d: recv from bad rank %d", c->rank, src);
  MsgHeader h;
  MPI_CHECK(c, MPI_Recv(&h, (int)sizeof h, MPI_BYTE, src, mtag, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
  if (h.tag != tag)
    return mpl_errf(&c->err, "rank %d: recv from rank %d expected tag %#llx but the next message has tag %#llx",
                    c->rank, src, (unsigned long long)tag, (unsigned long long)h.tag);
  if (h.bytes != bytes)
    return mpl_errf(&c->err, "rank %d: recv from rank %d (tag %#llx) expected %zu bytes but the message has %llu",
                    c->rank, src, (unsigned long long)tag, bytes, (unsigned long long)h.bytes);
  const MpiComm *m = mpi_of(c);
  for (size_t i = 0, np = npieces(m, bytes); i < np; i++)
    MPI_CHECK(c, MPI_Recv((uint8_t *)buf + i * m->piece, piece_len(m, bytes, i), MPI_BYTE, src, mtag, MPI_COMM_WORLD,
                          MPI_STATUS_IGNORE));
  return MPL_OK;
}

static int mpi_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  return post_send(c, dst, TAG_P2P, tag, buf, bytes);
}

static int mpi_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  return take_recv(c, src, TAG_P2P, tag, buf, bytes);
}

/* ---- collectives ------------------------------------------------------------------ */

static int coll_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  return post_send(c, dst, TAG_COLL, tag, buf, bytes);
}

static int coll_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  return take_recv(c, src, TAG_COLL, tag, buf, bytes);
}

/* Collective op over the group, made of this communicator's messages (comm.c). */
static int mpi_collective(MplComm *c, int op, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  int *sorted = mpl_comm_sorted_members(c, ranks, k);
  if (!sorted) return MPL_ERR;
  MplMsgIo io = {.c = c, .send = coll_send, .recv = coll_recv, .scratch = &mpi_of(c)->scratch};
  int st = mpl_msg_collective(&io, op, sorted, k, buf, n, elem);
  mpl_free(sorted);
  return st;
}

static int mpi_allreduce(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return mpi_collective(c, MPL_COLL_ALLREDUCE_F32, ranks, k, buf, n, sizeof *buf);
}

static int mpi_reduce_scatter(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return mpi_collective(c, MPL_COLL_REDUCE_SCATTER_F32, ranks, k, buf, n, sizeof *buf);
}

static int mpi_allgather(MplComm *c, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  return mpi_collective(c, MPL_COLL_ALLGATHER, ranks, k, buf, n, elem);
}

static int mpi_allreduce_f64(MplComm *c, const int *ranks, int k, double *buf, size_t n) {
  return mpi_collective(c, MPL_COLL_ALLREDUCE_F64, ranks, k, buf, n, sizeof *buf);
}

static int mpi_barrier(MplComm *c) {
  MPI_CHECK(c, MPI_Barrier(MPI_COMM_WORLD));
  return MPL_OK;
}

static void mpi_abort(MplComm *c, const char *why) {
  /* An error every process meets alike (a nan gradient norm, all-reduced; a missing file)
     was said once per process (pass 57): the others wait 300 ms first, so that rank 0's
     MPI_Abort, when it met the error too, ends them before they print. An error of one
     process alone is said 300 ms later. */
  /* rank 0's MPI_Abort ends the others with SIGTERM: their stop handler (mplrun's) would
     catch it, cut the wait short and say the error again */
  int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
  for (int i = 0; i < 4; i++) signal(sigs[i], SIG_DFL);
  if (c->rank != 0) usleep(300 * 1000);
  bool named = why && !strncmp(why, "rank ", 5); /* the runtime's messages often name the rank already */
  if (named) fprintf(stderr, "mplrun: error: %s\n", why);
  else fprintf(stderr, "mplrun: error: rank %d: %s\n", c->rank, why ? why : "aborted");
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

/* Waits for every pending send, then frees the communicator (not MPI itself). */
static void mpi_free(MplComm *c) {
  if (!c) return;
  MpiComm *m = mpi_of(c);
  for (int i = 0; i < m->npend; i++) {
    if (MPI_Waitall(m->pend[i].nreq, m->pend[i].req, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
      fprintf(stderr, "mplrun: rank %d: a pending send failed at the end\n", c->rank);
    mpl_free(m->pend[i].mem);
  }
  mpl_free(m->pend);
  mpl_scratch_free(&m->scratch);
  mpl_free(m);
}

const MplCommOps mpl_comm_mpi_ops = {
    .name = "mpi",
    .send = mpi_send,
    .recv = mpi_recv,
    .allreduce_sum_f32 = mpi_allreduce,
    .reduce_scatter_sum_f32 = mpi_reduce_scatter,
    .allgather = mpi_allgather,
    .allreduce_sum_f64 = mpi_allreduce_f64,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
    .free = mpi_free,
};

/* The rank among the processes of this host (MPI-3's shared-memory split); else the
 * launcher's local rank variable, else the world rank. */
static int find_local_rank(int rank) {
  MPI_Comm node;
  int local = -1;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    if (MPI_Comm_rank(node, &local) != MPI_SUCCESS) local = -1;
    MPI_Comm_free(&node);
  }
  const char *env = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (local < 0 && !env) env = getenv("MPI_LOCALRANKID");
  if (local < 0 && env) local = atoi(env);
  return local >= 0 ? local : rank;
}

int mpl_comm_mpi_local_rank(const MplComm *c) { return ((const MpiComm *)c->impl)->local_rank; }

int mpl_comm_mpi_bcast(MplComm *c, int root, void *buf, size_t bytes) {
  if (bytes > INT_MAX) return mpl_errf(&c->err, "rank %d: a broadcast of %zu bytes is too large for MPI", c->rank, bytes);
  MPI_CHECK(c, MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD));
  return MPL_OK;
}

int mpl_comm_mpi_allgather(MplComm *c, const void *mine, void *all, size_t bytes) {
  if (bytes > INT_MAX) return mpl_errf(&c->err, "rank %d: an allgather of %zu bytes is too large for MPI", c->rank, bytes);
  MPI_CHECK(c, MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD));
  return MPL_OK;
}

int mpl_comm_mpi_init(MplComm **out, int *argc, char ***argv, MplErr *err) {
  *out = NULL;
  int inited = 0, provided = 0, rank = 0, size = 0;
  if (MPI_Initialized(&inited) != MPI_SUCCESS) return mpl_errf(err, "MPI_Initialized failed");
  if (!inited && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    return mpl_errf(err, "MPI_Init_thread failed");
  if (MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
      MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS || MPI_Comm_size(MPI_COMM_WORLD, &size) != MPI_SUCCESS)
    return mpl_errf(err, "MPI: cannot query MPI_COMM_WORLD");
  MpiComm *m = mpl_calloc(1, sizeof *m);
  if (!m) return mpl_errf(err, "MPI communicator: out of memory");
  m->comm = (MplComm){.ops = &mpl_comm_mpi_ops, .rank = rank, .size = size, .impl = m};
  m->local_rank = find_local_rank(rank);
  m->piece = (size_t)1 << 30;
  const char *piece = getenv("MPL_MPI_PIECE"); /* tests: many pieces on small messages */
  if (piece && atoll(piece) >= 1 && atoll(piece) <= INT_MAX) m->piece = (size_t)atoll(piece);
  *out = &m->comm;
  return MPL_OK;
}

void mpl_comm_mpi_finalize(MplComm *c) {
  if (c) c->ops->free(c);
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

#else /* no MPI */

const MplCommOps mpl_comm_mpi_ops = {.name = "mpi"};

int mpl_comm_mpi_init(MplComm **out, int *argc, char ***argv, MplErr *err) {
  *out = NULL;
  return mpl_errf(err, "this mplrun was built without MPI (install libopenmpi-dev and rebuild)");
}

void mpl_comm_mpi_finalize(MplComm *c) { (void)c; }

int mpl_comm_mpi_local_rank(const MplComm *c) { return c->rank; }

int mpl_comm_mpi_bcast(MplComm *c, int root, void *buf, size_t bytes) {
  return mpl_errf(&c->err, "this mplrun was built without MPI");
}

int mpl_comm_mpi_allgather(MplComm *c, const void *mine, void *all, size_t bytes) {
  return mpl_errf(&c->err, "this mplrun was built without MPI");
}

#endif
