/*
 * comm.c — what the communicators share: the check of a group, the names and tags of the
 * collectives, the rank-order sum, and the collectives made of point-to-point messages
 * (comm_mpi.c uses them for every collective; the cuda kinds where NCCL does not run one).
 *
 * Invariants of the collectives made of messages:
 *  - every member first sends each other member what that member needs (the whole buffer
 *    for an all-reduce, the receiver's chunk for a reduce-scatter, its own chunk for an
 *    all-gather), then receives: sends are eager, so this order cannot deadlock;
 *  - a sum receives the members' parts in ascending rank order and adds them so, element by
 *    element (s = x0; s += x1; ...), in float or double: the bits of comm_local.c's sums,
 *    whatever the arrival order. The caller's own part is read from its buffer;
 *  - a reduce-scatter and an all-gather move chunks only; an empty chunk moves nothing
 *    (every member knows every chunk's size, so both ends skip it);
 *  - the messages' tag is mpl_coll_tag(op, n): the pair's FIFO order (on a channel of the
 *    collectives' own) says which call a message belongs to, the tag checks the kind and
 *    the size, so members that disagree fail instead of summing the wrong things.
 */
#include "comm_int.h"

#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

int *mpl_comm_sorted_members(MplComm *c, const int *ranks, int k) {
  int *s = k > 0 ? mpl_malloc((size_t)k * sizeof *s) : NULL;
  if (!s) return mpl_errf(&c->err, "rank %d: a collective over %d ranks: bad group or out of memory", c->rank, k), NULL;
  memcpy(s, ranks, (size_t)k * sizeof *s);
  qsort(s, (size_t)k, sizeof *s, cmp_int);
  bool me = false, ok = true;
  for (int i = 0; i < k; i++) {
    ok = ok && s[i] >= 0 && s[i] < c->size && (i == 0 || s[i] != s[i - 1]);
    me = me || s[i] == c->rank;
  }
  if (ok && me) return s;
  mpl_free(s);
  mpl_errf(&c->err, "rank %d: a collective's group has a bad rank, a duplicate, or not the caller", c->rank);
  return NULL;
}

int mpl_comm_slot(const int *sorted, int k, int rank) {
  const int *p = bsearch(&rank, sorted, (size_t)k, sizeof *sorted, cmp_int);
  return p ? (int)(p - sorted) : -1;
}

const char *mpl_coll_name(int op) {
  switch (op) {
  case MPL_COLL_ALLREDUCE_F32: return "all-reduce";
  case MPL_COLL_REDUCE_SCATTER_F32: return "reduce-scatter";
  case MPL_COLL_ALLGATHER: return "all-gather";
  case MPL_COLL_ALLREDUCE_F64: return "float64 all-reduce";
  case MPL_COLL_BARRIER: return "barrier";
  default: return "collective";
  }
}

uint64_t mpl_coll_tag(int op, size_t n) { return (uint64_t)op << 56 | ((uint64_t)n & ((1ull << 56) - 1)); }

void mpl_comm_accumulate(void *acc, const void *x, size_t n, size_t elem, bool first) {
  if (first) {
    if (n) memcpy(acc, x, n * elem);
  } else if (elem == sizeof(double)) {
    double *a = acc;
    const double *b = x;
    for (size_t i = 0; i < n; i++) a[i] += b[i];
  } else {
    float *a = acc;
    const float *b = x;
    for (size_t i = 0; i < n; i++) a[i] += b[i];
  }
}

int mpl_scratch_reserve(MplScratch *s, size_t bytes) {
  if (bytes <= s->cap && s->acc) return MPL_OK;
  size_t cap = bytes ? bytes : 1;
  uint8_t *a = mpl_realloc(s->acc, cap), *b = a ? mpl_realloc(s->in, cap) : NULL;
  if (a) s->acc = a;
  if (b) s->in = b;
  if (!a || !b) return MPL_ERR; /* cap unchanged: whatever grew is only larger */
  s->cap = cap;
  return MPL_OK;
}

void mpl_scratch_free(MplScratch *s) {
  mpl_free(s->acc), mpl_free(s->in);
  s->acc = s->in = NULL, s->cap = 0;
}

/* ---- collectives made of messages -------------------------------------------------------- */

static int io_to_host(const MplMsgIo *io, void *host, const void *buf, size_t bytes) {
  if (io->to_host) return io->to_host(io->c, host, buf, bytes);
  if (bytes) memcpy(host, buf, bytes);
  return MPL_OK;
}

static int io_from_host(const MplMsgIo *io, void *buf, const void *host, size_t bytes) {
  if (io->from_host) return io->from_host(io->c, buf, host, bytes);
  if (bytes) memcpy(buf, host, bytes);
  return MPL_OK;
}

/* [lo, lo+len) of every member (all: the whole buffer) summed in rank order into scratch
 * acc, the caller's own part read from mine; then written to mine. */
static int sum_in_rank_order(const MplMsgIo *io, const int *sorted, int k, int slot, uint64_t tag, uint8_t *mine,
                             size_t len, size_t elem) {
  MplComm *c = io->c;
  size_t bytes = len * elem;
  if (mpl_scratch_reserve(io->scratch, bytes) != MPL_OK) return mpl_errf(&c->err, "rank %d: out of memory in a collective", c->rank);
  uint8_t *acc = io->scratch->acc, *in = io->scratch->in;
  for (int j = 0; j < k; j++) {
    const uint8_t *part = j == slot && !io->to_host ? mine : in; /* host memory: read in place */
    int st = j != slot ? io->recv(c, sorted[j], tag, in, bytes) : part == in ? io_to_host(io, in, mine, bytes) : MPL_OK;
    if (st != MPL_OK) return MPL_ERR;
    mpl_comm_accumulate(acc, part, len, elem, j == 0);
  }
  return io_from_host(io, mine, acc, bytes);
}

static int msg_allreduce(const MplMsgIo *io, const int *sorted, int k, int slot, uint64_t tag, void *buf, size_t n,
                         size_t elem) {
  for (int j = 0; j < k; j++)
    if (j != slot && io->send(io->c, sorted[j], tag, buf, n * elem) != MPL_OK) return MPL_ERR;
  return sum_in_rank_order(io, sorted, k, slot, tag, buf, n, elem);
}

static int msg_reduce_scatter(const MplMsgIo *io, const int *sorted, int k, int slot, uint64_t tag, float *buf, size_t n) {
  size_t lo, len;
  for (int j = 0; j < k; j++) {
    mpl_comm_chunk(n, k, j, &lo, &len);
    if (j != slot && len && io->send(io->c, sorted[j], tag, buf + lo, len * sizeof *buf) != MPL_OK) return MPL_ERR;
  }
  mpl_comm_chunk(n, k, slot, &lo, &len);
  return len ? sum_in_rank_order(io, sorted, k, slot, tag, (uint8_t *)(buf + lo), len, sizeof *buf) : MPL_OK;
}

static int msg_allgather(const MplMsgIo *io, const int *sorted, int k, int slot, uint64_t tag, uint8_t *buf, size_t n,
                         size_t elem) {
  size_t lo, len;
  mpl_comm_chunk(n, k, slot, &lo, &len);
  for (int j = 0; j < k && len; j++)
    if (j != slot && io->send(io->c, sorted[j], tag, buf + lo * elem, len * elem) != MPL_OK) return MPL_ERR;
  for (int j = 0; j < k; j++) {
    mpl_comm_chunk(n, k, j, &lo, &len);
    if (j != slot && len && io->recv(io->c, sorted[j], tag, buf + lo * elem, len * elem) != MPL_OK) return MPL_ERR;
  }
  return MPL_OK;
}

int mpl_msg_collective(const MplMsgIo *io, int op, const int *sorted, int k, void *buf, size_t n, size_t elem) {
  int slot = mpl_comm_slot(sorted, k, io->c->rank);
  uint64_t tag = mpl_coll_tag(op, n);
  if (slot < 0) return mpl_errf(&io->c->err, "rank %d: not a member of its %s's group", io->c->rank, mpl_coll_name(op));
  if (k == 1) return MPL_OK;
  switch (op) {
  case MPL_COLL_ALLREDUCE_F32: return msg_allreduce(io, sorted, k, slot, tag, buf, n, sizeof(float));
  case MPL_COLL_ALLREDUCE_F64: return msg_allreduce(io, sorted, k, slot, tag, buf, n, sizeof(double));
  case MPL_COLL_REDUCE_SCATTER_F32: return msg_reduce_scatter(io, sorted, k, slot, tag, buf, n);
  case MPL_COLL_ALLGATHER: return msg_allgather(io, sorted, k, slot, tag, buf, n, elem);
  case MPL_COLL_BARRIER: { /* an all-reduce of one host float */
    MplMsgIo host = *io;
    float one = 1;
    host.to_host = NULL, host.from_host = NULL;
    return msg_allreduce(&host, sorted, k, slot, tag, &one, 1, sizeof one);
  }
  default: return mpl_errf(&io->c->err, "rank %d: %s is not made of messages", io->c->rank, mpl_coll_name(op));
  }
}
