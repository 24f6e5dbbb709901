/*
 * comm_local.c — the in-process communicator: R ranks that are threads of one process,
 * behind the MplCommOps table (comm.h says what every communicator means).
 *
 * Invariants:
 *  - messages go through the mailbox (mailbox.c): eager sends into a fresh copy, a FIFO
 *    per (src, dst), tag and size checked at the receiver (a mismatch aborts the world);
 *  - the mailbox's mutex also guards the groups. A collective's members meet in the group
 *    of their sorted member list: each publishes its buffer's address, and after a group
 *    barrier every member reads the others' buffers directly — no staging copy:
 *      all-reduce      member i sums chunk i over the members (ascending rank order) into
 *                      the group's result area; a barrier; every member copies the result;
 *      reduce-scatter  member i sums chunk i over the members into its own buffer's chunk i
 *                      (the others read only their own chunks of it);
 *      all-gather      member i copies chunk j of member j's buffer, for every j != i (member
 *                      j writes only the other chunks of its own buffer);
 *    so the bits depend neither on arrival order nor on which thread summed a chunk;
 *  - a member returns only when no member still reads its buffer: the barrier that opens
 *    the reading sets `reading` to k, each member counts itself out when done, and the
 *    closing barrier (or a member leaving after an abort) waits for it;
 *  - the first member to arrive records the collective's kind and size; a member that
 *    calls something else aborts the world, as a message mismatch does;
 *  - after mpl_comm_world_abort every blocked op wakes and fails, and every later op fails.
 */
#include "comm_int.h"

#include <stdio.h>
#include <string.h>

typedef struct Msg {
  MplMail mail;
  _Alignas(16) uint8_t data[];
} Msg;

/* A set of ranks that meet in collectives (found by its sorted member list). */
typedef struct Group {
  struct Group *next;
  int k;
  int *ranks;    /* sorted ascending */
  pthread_cond_t cond;
  int waiting;   /* at the barrier */
  uint64_t gen;  /* barriers passed */
  int arrived;   /* members that joined the current collective */
  int op;        /* the current collective: its kind, element count and size */
  size_t n, elem;
  void **bufs;   /* [k]: the members' buffers, by slot */
  int reading;   /* members still reading the others' buffers */
  uint8_t *result; /* all-reduce: the sums */
  size_t cap;    /* bytes allocated in result */
} Group;

struct MplCommWorld {
  MplMailbox mb; /* messages, the world's mutex (mb.mu) and the abort flag */
  MplComm *comms;
  Group *groups; /* under mb.mu */
};

static MplCommWorld *world_of(MplComm *c) { return c->impl; }

/* The mailbox's wake hook: wakes the members waiting in groups. */
static void wake_groups(void *owner) {
  MplCommWorld *w = owner;
  for (Group *g = w->groups; g; g = g->next) mpl_mailbox_broadcast(&w->mb, &g->cond);
}

void mpl_comm_world_abort(MplCommWorld *w, const char *why) { mpl_mailbox_abort(&w->mb, why); }

static int aborted_err(MplComm *c) { return mpl_mailbox_aborted_err(&world_of(c)->mb, c->rank, &c->err); }

/* ---- point to point ------------------------------------------------------ */

static void msg_drop(MplMail *m) { mpl_free(m); }

static int local_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  MplCommWorld *w = world_of(c);
  if (dst < 0 || dst >= c->size) return mpl_errf(&c->err, "rank %d: send to bad rank %d", c->rank, dst);
  Msg *m = mpl_malloc(sizeof *m + bytes);
  if (!m) return mpl_errf(&c->err, "rank %d: out of memory sending %zu bytes", c->rank, bytes);
  m->mail.tag = tag;
  m->mail.bytes = bytes;
  if (bytes) memcpy(m->data, buf, bytes);
  if (mpl_mailbox_post(&w->mb, 0, c->rank, dst, &m->mail, &c->err) == MPL_OK) return MPL_OK;
  mpl_free(m);
  return MPL_ERR;
}

static int local_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  if (src < 0 || src >= c->size) return mpl_errf(&c->err, "rank %d: recv from bad rank %d", c->rank, src);
  Msg *m = (Msg *)mpl_mailbox_take(&world_of(c)->mb, 0, src, c->rank, tag, bytes, &c->err);
  if (!m) return MPL_ERR;
  if (bytes) memcpy(buf, m->data, bytes);
  mpl_free(m);
  return MPL_OK;
}

/* ---- groups ----------------------------------------------------------------- */

/* Under the mutex: the group with these sorted members, created on first use. */
static Group *find_group(MplCommWorld *w, const int *sorted, int k) {
  for (Group *g = w->groups; g; g = g->next)
    if (g->k == k && memcmp(g->ranks, sorted, (size_t)k * sizeof *sorted) == 0) return g;
  Group *g = mpl_calloc(1, sizeof *g);
  int *ranks = mpl_malloc((size_t)k * sizeof *ranks);
  void **bufs = mpl_calloc((size_t)k, sizeof *bufs);
  if (!g || !ranks || !bufs) {
    mpl_free(g), mpl_free(ranks), mpl_free(bufs);
    return NULL;
  }
  memcpy(ranks, sorted, (size_t)k * sizeof *sorted);
  g->k = k, g->ranks = ranks, g->bufs = bufs;
  pthread_cond_init(&g->cond, NULL);
  g->next = w->groups;
  w->groups = g;
  return g;
}

/* Waits until all k members have called it (or the world aborts). opens_reading: the
 * members read each other's buffers after it (each then calls read_done). A member that
 * leaves because of an abort first waits until no member reads its buffer any more. */
static int group_barrier(MplComm *c, Group *g, bool opens_reading) {
  MplMailbox *mb = &world_of(c)->mb;
  pthread_mutex_lock(&mb->mu);
  uint64_t gen = g->gen;
  if (!mb->aborted && ++g->waiting == g->k) {
    g->waiting = 0;
    g->gen++;
    if (opens_reading) g->reading = g->k;
    mpl_mailbox_broadcast(mb, &g->cond);
  }
  long spin = mb->spin_ns;
  while (g->gen == gen && !mb->aborted) mpl_mailbox_wait(mb, &g->cond, &spin);
  bool ok = g->gen != gen;
  while (!ok && g->reading > 0) pthread_cond_wait(&g->cond, &mb->mu); /* reading is bounded work */
  pthread_mutex_unlock(&mb->mu);
  return ok ? MPL_OK : aborted_err(c);
}

static void read_done(MplComm *c, Group *g) {
  MplMailbox *mb = &world_of(c)->mb;
  pthread_mutex_lock(&mb->mu);
  if (--g->reading == 0) mpl_mailbox_broadcast(mb, &g->cond);
  pthread_mutex_unlock(&mb->mu);
}

/* Under the mutex: the caller joins group g's current collective (the first member to
 * arrive records it; the others must call the same) and publishes its buffer. */
static int group_arrive(MplComm *c, Group *g, int slot, int op, void *buf, size_t n, size_t elem) {
  MplMailbox *mb = &world_of(c)->mb;
  if (mb->aborted) return aborted_err(c);
  if (g->arrived == 0) {
    size_t need = op == MPL_COLL_ALLREDUCE_F32 || op == MPL_COLL_ALLREDUCE_F64 ? n * elem : 0;
    if (need > g->cap) {
      uint8_t *r = mpl_realloc(g->result, need);
      if (!r) {
        mpl_mailbox_abort_locked(mb, "out of memory in a collective");
        return aborted_err(c);
      }
      g->result = r, g->cap = need;
    }
    g->op = op, g->n = n, g->elem = elem;
  } else if (g->op != op || g->n != n || g->elem != elem) {
    char why[200];
    snprintf(why, sizeof why, "rank %d: %s of %zu elements of %zu bytes, but another member called %s of %zu of %zu",
             c->rank, mpl_coll_name(op), n, elem, mpl_coll_name(g->op), g->n, g->elem);
    mpl_mailbox_abort_locked(mb, why);
    return mpl_errf(&c->err, "%s", why);
  }
  g->bufs[slot] = buf;
  if (++g->arrived == g->k) g->arrived = 0;
  return MPL_OK;
}

/* The caller's group (its slot in it) for collective op, joined; then the barrier after
 * which the members read each other's buffers. */
static Group *group_enter(MplComm *c, const int *ranks, int k, int op, void *buf, size_t n, size_t elem, int *slot) {
  MplCommWorld *w = world_of(c);
  int *sorted = mpl_comm_sorted_members(c, ranks, k);
  if (!sorted) return NULL;
  *slot = mpl_comm_slot(sorted, k, c->rank);
  pthread_mutex_lock(&w->mb.mu);
  Group *g = find_group(w, sorted, k);
  int st = g ? group_arrive(c, g, *slot, op, buf, n, elem) : mpl_errf(&c->err, "rank %d: out of memory in a collective", c->rank);
  pthread_mutex_unlock(&w->mb.mu);
  mpl_free(sorted);
  if (st != MPL_OK || group_barrier(c, g, true) != MPL_OK) return NULL;
  return g;
}

/* ---- collectives --------------------------------------------------------------- */

/* out[lo, lo+len) = the members' buffers over the same elements, added in rank order. */
static void sum_chunk(const Group *g, void *out, size_t lo, size_t len) {
  if (g->elem == sizeof(double)) {
    for (size_t e = lo; e < lo + len; e++) {
      double s = ((const double *)g->bufs[0])[e];
      for (int j = 1; j < g->k; j++) s += ((const double *)g->bufs[j])[e];
      ((double *)out)[e] = s;
    }
    return;
  }
  for (size_t e = lo; e < lo + len; e++) {
    float s = ((const float *)g->bufs[0])[e];
    for (int j = 1; j < g->k; j++) s += ((const float *)g->bufs[j])[e];
    ((float *)out)[e] = s;
  }
}

static int local_allreduce_any(MplComm *c, int op, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  int slot;
  Group *g = group_enter(c, ranks, k, op, buf, n, elem, &slot);
  if (!g) return MPL_ERR;
  size_t lo, len;
  mpl_comm_chunk(n, k, slot, &lo, &len);
  sum_chunk(g, g->result, lo, len);
  read_done(c, g);
  if (group_barrier(c, g, false) != MPL_OK) return MPL_ERR;
  if (n) memcpy(buf, g->result, n * elem);
  return group_barrier(c, g, false); /* the result area is free again */
}

static int local_allreduce(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  return local_allreduce_any(c, MPL_COLL_ALLREDUCE_F32, ranks, k, buf, n, sizeof *buf);
}

static int local_allreduce_f64(MplComm *c, const int *ranks, int k, double *buf, size_t n) {
  return local_allreduce_any(c, MPL_COLL_ALLREDUCE_F64, ranks, k, buf, n, sizeof *buf);
}

static int local_reduce_scatter(MplComm *c, const int *ranks, int k, float *buf, size_t n) {
  int slot;
  Group *g = group_enter(c, ranks, k, MPL_COLL_REDUCE_SCATTER_F32, buf, n, sizeof *buf, &slot);
  if (!g) return MPL_ERR;
  size_t lo, len;
  mpl_comm_chunk(n, k, slot, &lo, &len);
  sum_chunk(g, buf, lo, len); /* element by element: each is read before it is written */
  read_done(c, g);
  return group_barrier(c, g, false);
}

static int local_allgather(MplComm *c, const int *ranks, int k, void *buf, size_t n, size_t elem) {
  int slot;
  Group *g = group_enter(c, ranks, k, MPL_COLL_ALLGATHER, buf, n, elem, &slot);
  if (!g) return MPL_ERR;
  for (int j = 0; j < k; j++) {
    size_t lo, len;
    mpl_comm_chunk(n, k, j, &lo, &len);
    if (j != slot && len) memcpy((uint8_t *)buf + lo * elem, (const uint8_t *)g->bufs[j] + lo * elem, len * elem);
  }
  read_done(c, g);
  return group_barrier(c, g, false);
}

static int local_barrier(MplComm *c) {
  MplCommWorld *w = world_of(c);
  int *all = mpl_malloc((size_t)c->size * sizeof *all);
  if (!all) return mpl_errf(&c->err, "rank %d: out of memory in barrier", c->rank);
  for (int r = 0; r < c->size; r++) all[r] = r;
  pthread_mutex_lock(&w->mb.mu);
  Group *g = find_group(w, all, c->size);
  pthread_mutex_unlock(&w->mb.mu);
  mpl_free(all);
  if (!g) return mpl_errf(&c->err, "rank %d: out of memory in barrier", c->rank);
  return group_barrier(c, g, false);
}

static void local_abort(MplComm *c, const char *why) {
  char msg[256];
  snprintf(msg, sizeof msg, "rank %d: %s", c->rank, why ? why : "aborted");
  mpl_comm_world_abort(world_of(c), msg);
}

static void local_free(MplComm *c) { (void)c; /* owned by the world */ }

const MplCommOps mpl_comm_local_ops = {
    .name = "local",
    .send = local_send,
    .recv = local_recv,
    .allreduce_sum_f32 = local_allreduce,
    .reduce_scatter_sum_f32 = local_reduce_scatter,
    .allgather = local_allgather,
    .allreduce_sum_f64 = local_allreduce_f64,
    .barrier = local_barrier,
    .abort = local_abort,
    .free = local_free,
};

/* ---- the world ------------------------------------------------------------------ */

/* A wait spins up to this long: most waits of a pipeline of ranks that each have a core
 * end within it (a micro-batch's pass on the neighbour). */
enum { SPIN_US = 1000 };

void mpl_comm_world_set_spin(MplCommWorld *w, int threads) { w->mb.spin_ns = mpl_mailbox_spin_ns(threads, SPIN_US); }

int mpl_comm_world_init(MplCommWorld **out, int nranks, MplErr *err) {
  *out = NULL;
  if (nranks < 1 || nranks > 4096) return mpl_errf(err, "communicator: bad rank count %d", nranks);
  MplCommWorld *w = mpl_calloc(1, sizeof *w);
  if (!w) return mpl_errf(err, "communicator: out of memory");
  w->comms = mpl_calloc((size_t)nranks, sizeof *w->comms);
  if (!w->comms || mpl_mailbox_init(&w->mb, nranks, 1, err) != MPL_OK) {
    mpl_free(w->comms);
    mpl_free(w);
    return mpl_errf(err, "communicator: out of memory");
  }
  w->mb.wake = wake_groups, w->mb.owner = w;
  mpl_comm_world_set_spin(w, nranks);
  for (int r = 0; r < nranks; r++)
    w->comms[r] = (MplComm){.ops = &mpl_comm_local_ops, .rank = r, .size = nranks, .impl = w};
  *out = w;
  return MPL_OK;
}

MplComm *mpl_comm_world_rank(MplCommWorld *w, int r) { return r >= 0 && r < w->mb.size ? &w->comms[r] : NULL; }

void mpl_comm_world_free(MplCommWorld *w) {
  if (!w) return;
  for (Group *g = w->groups, *next; g; g = next) {
    next = g->next;
    pthread_cond_destroy(&g->cond);
    mpl_free(g->ranks), mpl_free(g->bufs), mpl_free(g->result);
    mpl_free(g);
  }
  mpl_mailbox_free(&w->mb, msg_drop);
  mpl_free(w->comms);
  mpl_free(w);
}
