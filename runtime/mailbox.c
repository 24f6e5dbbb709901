/*
 * mailbox.c — the mailbox of ranks that are threads of one process: a FIFO per
 * (channel, source, destination), shared by the in-process communicator (comm_local.c)
 * and the CUDA threads' world (comm_cuda_world.c, whose messages carry device buffers).
 *
 * Invariants:
 *  - one mutex (mb->mu) guards every queue and the abort flag; an owner keeps its other
 *    shared state under it too. The mailbox moves headers only (MplMail, the first member
 *    of the owner's message): payloads are filled before post and read after take, outside
 *    the lock;
 *  - post appends and never blocks; take waits for the head of its FIFO, whose tag and
 *    size must be the ones asked for — a mismatch means the ranks disagree about the
 *    program, so the mailbox aborts rather than hang;
 *  - a wait (mpl_mailbox_wait: take's, and the owner's group barriers) first spins up to
 *    spin_ns on `seq`, which mpl_mailbox_broadcast bumps under the mutex with every wake-up
 *    (a post, an abort, the owner's barriers), and only then sleeps on its condition variable; the condition is always re-checked under
 *    the mutex, so the spin changes when a waiter notices, never what it sees. Sleeping
 *    alone cost about 55 us per message on a 2-core VM (the futex wake of an idle vCPU),
 *    3 us with the spin: in-process pipelines cross ranks at every message. The spin
 *    yields the CPU every 64 pauses, so a sender that shares the CPU (more threads than
 *    CPUs: taskset, another job) is not held off for the whole spin (pinned to one CPU,
 *    forced to spin: 100 ms per step of a tp = 2 GPT without the yields, 2.5 ms with);
 *  - abort keeps the first reason, raises the flag, wakes every waiting rank and calls the
 *    owner's wake hook (its other waiters); from then on every post and take fails.
 */
#include "comm_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

int mpl_mailbox_init(MplMailbox *mb, int size, int nchan, MplErr *err) {
  memset(mb, 0, sizeof *mb);
  size_t nq = (size_t)nchan * (size_t)size * (size_t)size;
  mb->cond = mpl_calloc((size_t)size, sizeof *mb->cond);
  mb->head = mpl_calloc(nq, sizeof *mb->head);
  mb->tail = mpl_calloc(nq, sizeof *mb->tail);
  if (!mb->cond || !mb->head || !mb->tail) {
    mpl_free(mb->cond), mpl_free(mb->head), mpl_free(mb->tail);
    memset(mb, 0, sizeof *mb);
    return mpl_errf(err, "communicator: out of memory");
  }
  mb->size = size, mb->nchan = nchan;
  pthread_mutex_init(&mb->mu, NULL);
  for (int r = 0; r < size; r++) pthread_cond_init(&mb->cond[r], NULL);
  return MPL_OK;
}

void mpl_mailbox_free(MplMailbox *mb, void (*drop)(MplMail *m)) {
  if (!mb->cond) return; /* zeroed, or init failed */
  size_t nq = (size_t)mb->nchan * (size_t)mb->size * (size_t)mb->size;
  for (size_t i = 0; i < nq; i++)
    for (MplMail *m = mb->head[i], *next; m; m = next) next = m->next, drop(m);
  for (int r = 0; r < mb->size; r++) pthread_cond_destroy(&mb->cond[r]);
  pthread_mutex_destroy(&mb->mu);
  mpl_free(mb->cond), mpl_free(mb->head), mpl_free(mb->tail);
  memset(mb, 0, sizeof *mb);
}

void mpl_mailbox_broadcast(MplMailbox *mb, pthread_cond_t *cond) {
  __atomic_add_fetch(&mb->seq, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(cond);
}

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void mpl_mailbox_wait(MplMailbox *mb, pthread_cond_t *cond, long *spin_left) {
  if (*spin_left <= 0) {
    pthread_cond_wait(cond, &mb->mu);
    return;
  }
  uint64_t seen = mb->seq;
  pthread_mutex_unlock(&mb->mu);
  long t0 = now_ns();
  for (unsigned i = 1; __atomic_load_n(&mb->seq, __ATOMIC_ACQUIRE) == seen; i++) {
    cpu_relax();
    if (i % 64) continue;
    if (now_ns() - t0 >= *spin_left) break;
    sched_yield(); /* a thread waiting for this CPU (the sender, when they share one) goes first */
  }
  *spin_left -= now_ns() - t0;
  if (*spin_left <= 0) *spin_left = 0;
  pthread_mutex_lock(&mb->mu);
}

long mpl_mailbox_spin_ns(int threads, long spin_us_default) {
  const char *e = getenv("MPL_WAIT_SPIN_US");
  if (e && *e) {
    char *end;
    long us = strtol(e, &end, 10);
    if (*end == 0 && us >= 0 && us <= 1000000) return us * 1000;
  }
  return threads <= mpl_cpus_usable() ? spin_us_default * 1000 : 0;
}

void mpl_mailbox_abort_locked(MplMailbox *mb, const char *why) {
  if (!mb->aborted) snprintf(mb->why, sizeof mb->why, "%s", why ? why : "aborted");
  mb->aborted = true;
  for (int r = 0; r < mb->size; r++) mpl_mailbox_broadcast(mb, &mb->cond[r]);
  if (mb->wake) mb->wake(mb->owner);
}

void mpl_mailbox_abort(MplMailbox *mb, const char *why) {
  pthread_mutex_lock(&mb->mu);
  mpl_mailbox_abort_locked(mb, why);
  pthread_mutex_unlock(&mb->mu);
}

int mpl_mailbox_aborted_err(const MplMailbox *mb, int rank, MplErr *err) {
  return mpl_errf(err, "rank %d: communicator aborted: %s", rank, mb->why);
}

static size_t queue_of(const MplMailbox *mb, int chan, int src, int dst) {
  return ((size_t)chan * (size_t)mb->size + (size_t)src) * (size_t)mb->size + (size_t)dst;
}

int mpl_mailbox_post(MplMailbox *mb, int chan, int src, int dst, MplMail *m, MplErr *err) {
  m->next = NULL;
  size_t q = queue_of(mb, chan, src, dst);
  pthread_mutex_lock(&mb->mu);
  bool aborted = mb->aborted;
  if (!aborted) {
    if (mb->tail[q]) mb->tail[q]->next = m;
    else mb->head[q] = m;
    mb->tail[q] = m;
    mpl_mailbox_broadcast(mb, &mb->cond[dst]);
  }
  pthread_mutex_unlock(&mb->mu);
  return aborted ? mpl_mailbox_aborted_err(mb, src, err) : MPL_OK;
}

/* Under the mutex: the head message must be the one asked for; else abort. */
static int check_head(MplMailbox *mb, const MplMail *m, int src, int dst, uint64_t tag, size_t bytes, MplErr *err) {
  char why[256];
  if (m->tag != tag)
    snprintf(why, sizeof why, "rank %d: recv from rank %d expected tag %#llx but the next message has tag %#llx", dst,
             src, (unsigned long long)tag, (unsigned long long)m->tag);
  else if (m->bytes != bytes)
    snprintf(why, sizeof why, "rank %d: recv from rank %d (tag %#llx) expected %zu bytes but the message has %zu", dst,
             src, (unsigned long long)tag, bytes, m->bytes);
  else return MPL_OK;
  mpl_mailbox_abort_locked(mb, why);
  return mpl_errf(err, "%s", why);
}

MplMail *mpl_mailbox_take(MplMailbox *mb, int chan, int src, int dst, uint64_t tag, size_t bytes, MplErr *err) {
  size_t q = queue_of(mb, chan, src, dst);
  pthread_mutex_lock(&mb->mu);
  long spin = mb->spin_ns;
  while (!mb->head[q] && !mb->aborted) mpl_mailbox_wait(mb, &mb->cond[dst], &spin);
  MplMail *m = mb->head[q];
  if (mb->aborted) {
    mpl_mailbox_aborted_err(mb, dst, err);
    m = NULL;
  } else if (check_head(mb, m, src, dst, tag, bytes, err) != MPL_OK) {
    m = NULL;
  } else {
    mb->head[q] = m->next;
    if (!mb->head[q]) mb->tail[q] = NULL;
  }
  pthread_mutex_unlock(&mb->mu);
  return m;
}
