/*
 * comm_local.c — the in-process communicator: R ranks that are threads of one process,
 * behind the MplCommOps table (the same interface as the MPI and NCCL communicators).
 *
 * Invariants:
 *  - one world mutex guards every queue, group and the abort flag; data is copied outside
 *    it (send copies into a fresh message before locking, recv copies out after unlocking);
 *  - send is eager: it appends to the (src, dst) FIFO and never blocks; recv waits on its
 *    rank's condition variable (no spinning) for the head of the (src, dst) FIFO, whose tag
 *    and size must match the request — a mismatch means the ranks disagree about the
 *    program, so it aborts the world rather than hang;
 *  - allreduce stages every member's buffer in a group-owned area, each member then sums
 *    its own slice of elements over the members in ascending rank order, and every member
 *    copies the whole result: the bits do not depend on arrival order or on which thread
 *    summed a slice. Three group barriers separate staging, summing and copying out;
 *  - after mpl_comm_world_abort every blocked op wakes and fails, and every later op fails.
 */
#include "mpl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct Msg {
  struct Msg *next;
  uint64_t tag;
  size_t bytes;
  _Alignas(16) uint8_t data[];
} Msg;

typedef struct MsgQueue {
  Msg *head, *tail;
} MsgQueue;

/* A set of ranks that reduce together (found by its sorted member list). */
typedef struct Group {
  struct Group *next;
  int k;
  int *ranks; /* sorted ascending */
  pthread_cond_t cond;
  int waiting, arrived;
  uint64_t gen;
  size_t n;     /* elements of the current allreduce */
  float *stage; /* k*n staged inputs, then n results */
  size_t cap;   /* floats allocated in stage */
} Group;

struct MplCommWorld {
  int size;
  pthread_mutex_t mu;
  pthread_cond_t *rank_cond; /* recv of rank r waits on rank_cond[r] */
  MsgQueue *queues;          /* [src * size + dst] */
  MplComm *comms;
  Group *groups;
  bool aborted;
  char why[256];
};

static MplCommWorld *world_of(MplComm *c) { return c->impl; }

/* Under the mutex: sets the abort flag and wakes everyone. */
static void abort_locked(MplCommWorld *w, const char *why) {
  if (!w->aborted) snprintf(w->why, sizeof w->why, "%s", why);
  w->aborted = true;
  for (int r = 0; r < w->size; r++) pthread_cond_broadcast(&w->rank_cond[r]);
  for (Group *g = w->groups; g; g = g->next) pthread_cond_broadcast(&g->cond);
}

void mpl_comm_world_abort(MplCommWorld *w, const char *why) {
  pthread_mutex_lock(&w->mu);
  abort_locked(w, why ? why : "aborted");
  pthread_mutex_unlock(&w->mu);
}

static int aborted_err(MplComm *c, MplCommWorld *w) {
  return mpl_errf(&c->err, "rank %d: communicator aborted: %s", c->rank, w->why);
}

/* ---- point to point ------------------------------------------------------ */

static int local_send(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes) {
  MplCommWorld *w = world_of(c);
  if (dst < 0 || dst >= w->size) return mpl_errf(&c->err, "rank %d: send to bad rank %d", c->rank, dst);
  Msg *m = mpl_malloc(sizeof *m + bytes);
  if (!m) return mpl_errf(&c->err, "rank %d: out of memory sending %zu bytes", c->rank, bytes);
  m->next = NULL;
  m->tag = tag;
  m->bytes = bytes;
  if (bytes) memcpy(m->data, buf, bytes);
  pthread_mutex_lock(&w->mu);
  if (w->aborted) {
    pthread_mutex_unlock(&w->mu);
    mpl_free(m);
    return aborted_err(c, w);
  }
  MsgQueue *q = &w->queues[c->rank * w->size + dst];
  if (q->tail) q->tail->next = m;
  else q->head = m;
  q->tail = m;
  pthread_cond_broadcast(&w->rank_cond[dst]);
  pthread_mutex_unlock(&w->mu);
  return MPL_OK;
}

/* Under the mutex: the head message must be the one asked for; else abort the world. */
static int check_head(MplComm *c, MplCommWorld *w, const Msg *m, int src, uint64_t tag, size_t bytes) {
  char why[256];
  if (m->tag != tag)
    snprintf(why, sizeof why, "rank %d: recv from rank %d expected tag %#llx but the next message has tag %#llx",
             c->rank, src, (unsigned long long)tag, (unsigned long long)m->tag);
  else if (m->bytes != bytes)
    snprintf(why, sizeof why, "rank %d: recv from rank %d (tag %#llx) expected %zu bytes but the message has %zu",
             c->rank, src, (unsigned long long)tag, bytes, m->bytes);
  else return MPL_OK;
  abort_locked(w, why);
  return mpl_errf(&c->err, "%s", why);
}

static int local_recv(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes) {
  MplCommWorld *w = world_of(c);
  if (src < 0 || src >= w->size) return mpl_errf(&c->err, "rank %d: recv from bad rank %d", c->rank, src);
  MsgQueue *q = &w->queues[src * w->size + c->rank];
  pthread_mutex_lock(&w->mu);
  while (!q->head && !w->aborted) pthread_cond_wait(&w->rank_cond[c->rank], &w->mu);
  if (w->aborted) {
    pthread_mutex_unlock(&w->mu);
    return aborted_err(c, w);
  }
  Msg *m = q->head;
  if (check_head(c, w, m, src, tag, bytes)) {
    pthread_mutex_unlock(&w->mu);
    return MPL_ERR;
  }
  q->head = m->next;
  if (!q->head) q->tail = NULL;
  pthread_mutex_unlock(&w->mu);
  if (bytes) memcpy(buf, m->data, bytes);
  mpl_free(m);
  return MPL_OK;
}

/* ---- groups and collectives ------------------------------------------------ */

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* Under the mutex: the group with these sorted members, created on first use. */
static Group *find_group(MplCommWorld *w, const int *sorted, int k) {
  for (Group *g = w->groups; g; g = g->next)
    if (g->k == k && memcmp(g->ranks, sorted, (size_t)k * sizeof *sorted) == 0) return g;
  Group *g = mpl_calloc(1, sizeof *g);
  int *ranks = mpl_malloc((size_t)k * sizeof *ranks);
  if (!g || !ranks) {
    mpl_free(g);
    mpl_free(ranks);
    return NULL;
  }
  memcpy(ranks, sorted, (size_t)k * sizeof *sorted);
  g->k = k;
  g->ranks = ranks;
  pthread_cond_init(&g->cond, NULL);
  g->next = w->groups;
  w->groups = g;
  return g;
}

/* Waits until all k members have called it (or the world aborts). */
static int group_barrier(MplComm *c, MplCommWorld *w, Group *g) {
  pthread_mutex_lock(&w->mu);
  uint64_t gen = g->gen;
  if (!w->aborted && ++g->waiting == g->k) {
    g->waiting = 0;
    g->gen++;
    pthread_cond_broadcast(&g->cond);
  }
  while (g->gen == gen && !w->aborted) pthread_cond_wait(&g->cond, &w->mu);
  bool ok = g->gen != gen;
  pthread_mutex_unlock(&w->mu);
  return ok ? MPL_OK : aborted_err(c, w);
}

/* The sorted copy of ranks, checked: in range, no duplicates, containing the caller. */
int *mpl_comm_sorted_members(MplComm *c, const int *ranks, int k) {
  int *s = k > 0 ? mpl_malloc((size_t)k * sizeof *s) : NULL;
  if (!s) return mpl_errf(&c->err, "rank %d: allreduce over %d ranks: bad group or out of memory", c->rank, k), NULL;
  memcpy(s, ranks, (size_t)k * sizeof *s);
  qsort(s, (size_t)k, sizeof *s, cmp_int);
  bool me = false, ok = true;
  for (int i = 0; i < k; i++) {
    ok = ok && s[i] >= 0 && s[i] < c->size && (i == 0 || s[i] != s[i - 1]);
    me = me || s[i] == c->rank;
  }
  if (ok && me) return s;
  mpl_free(s);
  mpl_errf(&c->err, "rank %d: allreduce group has a bad rank, a duplicate, or not the caller", c->rank);
  return NULL;
}

/* Under the mutex: registers the caller's arrival; the first arriver sizes the stage. */
static int group_arrive(MplComm *c, MplCommWorld *w, Group *g, size_t n) {
  if (w->aborted) return aborted_err(c, w);
  if (g->arrived == 0) {
    size_t need = n * (size_t)(g->k + 1);
    if (need > g->cap) {
      float *s = mpl_realloc(g->stage, need * sizeof(float));
      if (!s) {
        abort_locked(w, "out of memory in allreduce");
        return aborted_err(c, w);
      }
      g->stage = s;
      g->cap = need;
    }
    g->n = n;
  } else if (g->n != n) {
    char why[160];
    snprintf(why, sizeof why, "rank %d: allreduce of %zu floats but another member passed %zu", c->rank, n, g->n);
    abort_locked(w, why);
    return mpl_errf(&c->err, "%s", why);
  }
  if (++g->arrived == g->k) g->arrived = 0;
  return MPL_OK;
}

/* Elements [lo, hi) of the result: members added in ascending rank order. */
static void sum_slice(const Group *g, size_t lo, size_t hi) {
  float *out = g->stage + (size_t)g->k * g->n;
  for (size_t i = lo; i < hi; i++) {
    float s = g->stage[i];
    for (int j = 1; j < g->k; j++) s += g->stage[(size_t)j * g->n + i];
    out[i] = s;
  }
}

static int local_allreduce(MplComm *c, const int *ranks, int nranks, float *buf, size_t n) {
  MplCommWorld *w = world_of(c);
  int *sorted = mpl_comm_sorted_members(c, ranks, nranks);
  if (!sorted) return MPL_ERR;
  int slot = (int)((const int *)bsearch(&c->rank, sorted, (size_t)nranks, sizeof *sorted, cmp_int) - sorted);
  pthread_mutex_lock(&w->mu);
  Group *g = find_group(w, sorted, nranks);
  int rc = g ? group_arrive(c, w, g, n) : mpl_errf(&c->err, "rank %d: out of memory in allreduce", c->rank);
  pthread_mutex_unlock(&w->mu);
  mpl_free(sorted);
  if (rc) return MPL_ERR;
  if (n) memcpy(g->stage + (size_t)slot * n, buf, n * sizeof *buf);
  if (group_barrier(c, w, g)) return MPL_ERR;
  sum_slice(g, n * (size_t)slot / (size_t)g->k, n * (size_t)(slot + 1) / (size_t)g->k);
  if (group_barrier(c, w, g)) return MPL_ERR;
  if (n) memcpy(buf, g->stage + (size_t)g->k * n, n * sizeof *buf);
  return group_barrier(c, w, g);
}

static int local_barrier(MplComm *c) {
  MplCommWorld *w = world_of(c);
  int *all = mpl_malloc((size_t)c->size * sizeof *all);
  if (!all) return mpl_errf(&c->err, "rank %d: out of memory in barrier", c->rank);
  for (int r = 0; r < c->size; r++) all[r] = r;
  pthread_mutex_lock(&w->mu);
  Group *g = find_group(w, all, c->size);
  pthread_mutex_unlock(&w->mu);
  mpl_free(all);
  if (!g) return mpl_errf(&c->err, "rank %d: out of memory in barrier", c->rank);
  return group_barrier(c, w, g);
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
    .barrier = local_barrier,
    .abort = local_abort,
    .free = local_free,
};

/* ---- the world ------------------------------------------------------------------ */

int mpl_comm_world_init(MplCommWorld **out, int nranks, MplErr *err) {
  *out = NULL;
  if (nranks < 1 || nranks > 4096) return mpl_errf(err, "communicator: bad rank count %d", nranks);
  MplCommWorld *w = mpl_calloc(1, sizeof *w);
  if (!w) return mpl_errf(err, "communicator: out of memory");
  w->rank_cond = mpl_calloc((size_t)nranks, sizeof *w->rank_cond);
  w->queues = mpl_calloc((size_t)nranks * (size_t)nranks, sizeof *w->queues);
  w->comms = mpl_calloc((size_t)nranks, sizeof *w->comms);
  if (!w->rank_cond || !w->queues || !w->comms) {
    mpl_free(w->rank_cond);
    mpl_free(w->queues);
    mpl_free(w->comms);
    mpl_free(w);
    return mpl_errf(err, "communicator: out of memory");
  }
  w->size = nranks;
  pthread_mutex_init(&w->mu, NULL);
  for (int r = 0; r < nranks; r++) {
    pthread_cond_init(&w->rank_cond[r], NULL);
    w->comms[r] = (MplComm){.ops = &mpl_comm_local_ops, .rank = r, .size = nranks, .impl = w};
  }
  *out = w;
  return MPL_OK;
}

MplComm *mpl_comm_world_rank(MplCommWorld *w, int r) { return r >= 0 && r < w->size ? &w->comms[r] : NULL; }

void mpl_comm_world_free(MplCommWorld *w) {
  if (!w) return;
  for (int i = 0; i < w->size * w->size; i++)
    for (Msg *m = w->queues[i].head, *next; m; m = next) next = m->next, mpl_free(m);
  for (Group *g = w->groups, *next; g; g = next) {
    next = g->next;
    pthread_cond_destroy(&g->cond);
    mpl_free(g->ranks);
    mpl_free(g->stage);
    mpl_free(g);
  }
  for (int r = 0; r < w->size; r++) pthread_cond_destroy(&w->rank_cond[r]);
  pthread_mutex_destroy(&w->mu);
  mpl_free(w->rank_cond);
  mpl_free(w->queues);
  mpl_free(w->comms);
  mpl_free(w);
}
