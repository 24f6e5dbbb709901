/*
 * comm_int.h — private to the communicators' implementations (comm*.c, mailbox.c): what
 * they share, in sections named after the files that define them:
 *   comm.c     the collectives' kinds and tags, a member's slot, rank-order sums, scratch,
 *              and the collectives made of point-to-point messages (comm_mpi.c, and the
 *              cuda kinds where NCCL does not run them)
 *   mailbox.c  the FIFO per (channel, source, destination) of ranks that are threads of one
 *              process (comm_local.c and comm_cuda_world.c)
 * The public interface and its meaning are comm.h's.
 */
#ifndef MPL_COMM_INT_H
#define MPL_COMM_INT_H

#include <pthread.h>

#include "comm.h"

/* ==== comm.c ========================================================== */

/* The collectives, as the mismatch checks and the tags of their messages name them. */
typedef enum MplCollOp {
  MPL_COLL_ALLREDUCE_F32, /* 0: the tag of an f32 all-reduce's messages is n, as it was */
  MPL_COLL_REDUCE_SCATTER_F32,
  MPL_COLL_ALLGATHER,
  MPL_COLL_ALLREDUCE_F64,
  MPL_COLL_BARRIER,
} MplCollOp;

/* "reduce-scatter", ... */
const char *mpl_coll_name(int op);
/* The tag of a collective's messages: its kind and element count (the pair's FIFO order
 * says which call a message belongs to; the tag checks that both ends agree). */
uint64_t mpl_coll_tag(int op, size_t n);
/* The index of rank in sorted[0..k) (a member: mpl_comm_sorted_members checked it). */
int mpl_comm_slot(const int *sorted, int k, int rank);
/* One step of a rank-order sum, element by element: acc = x (first) or acc += x, in
 * float (elem 4) or double (elem 8). */
void mpl_comm_accumulate(void *acc, const void *x, size_t n, size_t elem, bool first);

/* Host scratch a communicator keeps between collectives (grown, never shrunk). */
typedef struct MplScratch {
  uint8_t *acc, *in;
  size_t cap; /* bytes of each */
} MplScratch;
int mpl_scratch_reserve(MplScratch *s, size_t bytes);
void mpl_scratch_free(MplScratch *s);

/* How a communicator moves a collective's messages: send and recv are its point-to-point
 * ops on a channel of their own (never matched with the executor's messages); to_host and
 * from_host copy between the collective's buffer (device memory under the cuda kinds) and
 * host memory (NULL: buf is host memory, a plain copy). */
typedef struct MplMsgIo {
  MplComm *c;
  int (*send)(MplComm *c, int dst, uint64_t tag, const void *buf, size_t bytes);
  int (*recv)(MplComm *c, int src, uint64_t tag, void *buf, size_t bytes);
  int (*to_host)(MplComm *c, void *host, const void *buf, size_t bytes);
  int (*from_host)(MplComm *c, void *buf, const void *host, size_t bytes);
  MplScratch *scratch;
} MplMsgIo;

/* Collective op over sorted[0..k) (the caller among them; MPL_COLL_BARRIER: buf NULL,
 * n 0, an all-reduce of one host float) made of messages: every part a member needs is sent to it first (eager sends: no deadlock), then
 * received in ascending rank order and summed so on the host (mpl_comm_accumulate). A
 * reduce-scatter and an all-gather move chunks only. elem: 4 for the f32 sums, 8 for f64. */
int mpl_msg_collective(const MplMsgIo *io, int op, const int *sorted, int k, void *buf, size_t n, size_t elem);

/* ==== mailbox.c ======================================================= */

/* A message's header, embedded first in the owner's message (the payload is the owner's). */
typedef struct MplMail {
  struct MplMail *next;
  uint64_t tag;
  size_t bytes;
} MplMail;

typedef struct MplMailbox {
  int size, nchan;
  pthread_mutex_t mu;    /* guards the queues and the flag (and what the owner puts under it) */
  pthread_cond_t *cond;  /* [size]: a take by rank r waits on cond[r] */
  MplMail **head, **tail; /* [(chan * size + src) * size + dst] */
  bool aborted;
  char why[256];         /* the first abort's reason, written before `aborted` is set */
  void (*wake)(void *owner); /* called under mu at the abort: wakes the owner's other waiters */
  void *owner;
  uint64_t seq;          /* bumped (atomically, under mu) by every change a waiter waits for */
  long spin_ns;          /* a wait spins this long on seq before it sleeps (0: sleeps at once) */
} MplMailbox;

/* size ranks, nchan channels (each a FIFO per ordered pair). */
int mpl_mailbox_init(MplMailbox *mb, int size, int nchan, MplErr *err);
/* After every rank stopped: the undelivered messages go to drop, then the mailbox is freed.
 * Safe on a zeroed mailbox. */
void mpl_mailbox_free(MplMailbox *mb, void (*drop)(MplMail *m));
/* Appends m to (chan, src, dst) and wakes dst. After an abort m is not taken: MPL_ERR. */
int mpl_mailbox_post(MplMailbox *mb, int chan, int src, int dst, MplMail *m, MplErr *err);
/* Waits for the head of (chan, src, dst) and detaches it (the caller owns it then). Its tag
 * and size must be tag and bytes, else the mailbox aborts; NULL with the message in err
 * after any failure. */
MplMail *mpl_mailbox_take(MplMailbox *mb, int chan, int src, int dst, uint64_t tag, size_t bytes, MplErr *err);
/* Raises the flag (the first reason is kept) and wakes every waiter; _locked: under mu. */
void mpl_mailbox_abort(MplMailbox *mb, const char *why);
void mpl_mailbox_abort_locked(MplMailbox *mb, const char *why);
/* "rank R: communicator aborted: why" into err; returns MPL_ERR. */
int mpl_mailbox_aborted_err(const MplMailbox *mb, int rank, MplErr *err);
/* Under mu, in a `while (!condition) mpl_mailbox_wait(...)` loop: returns (mu held) after
 * something changed or a wake-up. While *spin_left > 0 it releases mu and spins on seq
 * (spending *spin_left, in ns) instead of sleeping on cond. */
void mpl_mailbox_wait(MplMailbox *mb, pthread_cond_t *cond, long *spin_left);
/* Under mu: what the waiters on cond wait for has changed: bumps seq (the spinners see it)
 * and broadcasts cond (the sleepers wake). Every such change goes through it. */
void mpl_mailbox_broadcast(MplMailbox *mb, pthread_cond_t *cond);
/* The spin before a wait sleeps: MPL_WAIT_SPIN_US when set, else spin_us_default when the
 * process's threads fit its CPUs (threads <= cores), else 0. */
long mpl_mailbox_spin_ns(int threads, long spin_us_default);

#endif
