/*
 * host_fibers.h — the threads of a simulated GPU block (or warp) as fibers on one host
 * thread, for the tests that run CUDA C on the host (cuda_host.h: the runtime's own CUDA
 * programs; cuda_gen_host.h: the kernels mplc generates).
 *
 * host_fibers_run(n, fn, ...) runs fn(0) .. fn(n-1), each on a fiber of its own, one at a
 * time: a fiber runs until it returns or calls host_fiber_wait; when every fiber that has
 * not returned is waiting, sync(ctx) runs (the barrier's or the shuffle's exchange) and
 * they all go on. A wait that some fibers reach after others returned is a divergence the
 * GPU would not forgive: the run stops and returns false. So a barrier costs a few
 * function calls, not a kernel's futex round trips: the pthreads these tests used before
 * (a thread per simulated thread, pthread barriers) cost most of their time in the kernel
 * on a 2-core machine.
 *
 * host_fiber_warp_wait is a wait of the fiber's warp (fibers 32 w .. 32 w + 31) alone: a
 * warp's shuffle or mma. The fibers go warp by warp, each warp as far as it can (its warp
 * waits let go as soon as all of it is there) before the next one starts: a warp runs
 * ahead of the others to the block's next barrier, as it may on a GPU, so a barrier
 * missing between one warp's writes to shared memory and another's reads of them gives
 * other numbers, not the right ones by luck. A warp some of whose fibers wait at a warp
 * wait while others wait at the block's barrier, or returned, diverged: false.
 *
 * Each host thread keeps its own fibers (created on first use, each with its stack, kept
 * for the next run); they are started once with makecontext/swapcontext and then
 * switched with _setjmp/_longjmp, which leave the signal mask alone (no system call a
 * switch). The _FORTIFY_SOURCE longjmp check is off for the file that includes this.
 */
#ifndef MPL_TEST_HOST_FIBERS_H
#define MPL_TEST_HOST_FIBERS_H

#ifdef _FORTIFY_SOURCE
#undef _FORTIFY_SOURCE /* its __longjmp_chk refuses a jump to another stack */
#endif
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

enum { HOST_FIBERS_MAX = 1024, HOST_FIBER_STACK = 1 << 17 };
enum { HOST_FIBER_RUN, HOST_FIBER_WAIT, HOST_FIBER_DONE, HOST_FIBER_WARP };

/* The order the fibers take their turns in, from MPL_FIBER_ORDER: unset or "fwd", warp 0
 * first and each warp's lanes upwards; "rev", the last warp first and lanes downwards; a
 * number, a shuffle of the warps and of each warp's lanes drawn anew at every barrier and
 * warp wait from that seed. A barrier missing between one thread's writes to shared memory
 * and another's reads of them is hidden by an order that runs the writer first; the suites
 * run in more than one order (tests/e2e/fiber_orders.sh), so that some order runs the
 * reader first and the numbers change. */
typedef struct HostFiberOrder {
  int kind; /* 0 forward, 1 reversed, 2 shuffled */
  unsigned long long state;
} HostFiberOrder;
static HostFiberOrder host_fiber_order_read(void) {
  const char *e = getenv("MPL_FIBER_ORDER");
  HostFiberOrder o = {0, 0};
  if (!e || !*e || !strcmp(e, "fwd")) return o;
  if (!strcmp(e, "rev")) return (HostFiberOrder){1, 0};
  char *end;
  unsigned long long seed = strtoull(e, &end, 10);
  if (*end || e[0] == '-') {
    fprintf(stderr, "MPL_FIBER_ORDER=%s: expected fwd, rev or a seed (a number)\n", e);
    abort();
  }
  return (HostFiberOrder){2, seed * 0x9E3779B97F4A7C15ull + 1};
}
/* perm[0 .. n-1] := the order of n turns (n <= 1024). */
static void host_fiber_order_draw(HostFiberOrder *o, int *perm, int n) {
  for (int i = 0; i < n; i++) perm[i] = o->kind == 1 ? n - 1 - i : i;
  if (o->kind != 2) return;
  for (int i = n - 1; i > 0; i--) {
    o->state ^= o->state << 13, o->state ^= o->state >> 7, o->state ^= o->state << 17;
    int j = (int)(o->state % (unsigned long long)(i + 1)), t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
}

typedef struct HostFibers {
  int made;                 /* fibers created so far (each parked, ready to run) */
  int n, cur, starting;     /* this run's fibers; the one running; the one being made */
  jmp_buf sched;            /* the scheduler, where a fiber jumps when it waits or returns */
  jmp_buf jb[HOST_FIBERS_MAX];
  int state[HOST_FIBERS_MAX];
  char *stack[HOST_FIBERS_MAX];
  void (*fn)(int i, void *ctx);
  void *ctx;
  HostFiberOrder order; /* the turns' order (read from the environment on first use) */
  int order_read;
  int wperm[HOST_FIBERS_MAX / 32], lperm[32];
} HostFibers;

static _Thread_local HostFibers *host_fibers_tls;

/* A thread's fibers go with it (a rank's thread, or one that ran another's stream). */
static pthread_key_t host_fibers_key;
static pthread_once_t host_fibers_once = PTHREAD_ONCE_INIT;
static void host_fibers_gone(void *p) {
  HostFibers *F = p;
  for (int i = 0; i < HOST_FIBERS_MAX; i++) free(F->stack[i]);
  free(F);
}
static void host_fibers_key_make(void) {
  if (pthread_key_create(&host_fibers_key, host_fibers_gone) != 0) abort();
}

/* The fiber's life: parked until the scheduler jumps in, then fn, then parked again. */
static void host_fiber_main(void) {
  HostFibers *F = host_fibers_tls;
  int me = F->starting;
  for (;;) {
    if (!_setjmp(F->jb[me])) _longjmp(F->sched, 1);
    F->fn(me, F->ctx);
    F->state[me] = HOST_FIBER_DONE;
  }
}

/* The running fiber's index (0 .. n-1). */
static inline int host_fiber_self(void) { return host_fibers_tls->cur; }

/* The running fiber waits for every fiber of the run (a barrier). */
static inline void host_fiber_wait(void) {
  HostFibers *F = host_fibers_tls;
  int me = F->cur;
  F->state[me] = HOST_FIBER_WAIT;
  if (!_setjmp(F->jb[me])) _longjmp(F->sched, 1);
}

/* The running fiber waits for the fibers of its warp (32 of them, or the run's last ones). */
static inline void host_fiber_warp_wait(void) {
  HostFibers *F = host_fibers_tls;
  int me = F->cur;
  F->state[me] = HOST_FIBER_WARP;
  if (!_setjmp(F->jb[me])) _longjmp(F->sched, 1);
}

/* Runs fn(i, ctx) for i in [0, n) as above; enter(i, ctx) is called each time fiber i is
 * resumed (to set threadIdx), sync(ctx) when all wait. False: divergence, or no memory. */
static bool host_fibers_run(int n, void (*fn)(int, void *), void (*enter)(int, void *), void (*sync)(void *),
                            void *ctx) {
  if (!host_fibers_tls) {
    if (!(host_fibers_tls = calloc(1, sizeof *host_fibers_tls))) return false;
    pthread_once(&host_fibers_once, host_fibers_key_make);
    pthread_setspecific(host_fibers_key, host_fibers_tls);
  }
  HostFibers *volatile const F = host_fibers_tls; /* (volatile: read after _longjmp returns here) */
  if (n < 0 || n > HOST_FIBERS_MAX) return false;
  while (F->made < n) {
    int i = F->made;
    ucontext_t uc, here;
    if (!F->stack[i] && !(F->stack[i] = malloc(HOST_FIBER_STACK))) return false;
    getcontext(&uc);
    uc.uc_stack.ss_sp = F->stack[i];
    uc.uc_stack.ss_size = HOST_FIBER_STACK;
    uc.uc_link = NULL;
    makecontext(&uc, host_fiber_main, 0);
    F->starting = i;
    if (!_setjmp(F->sched)) swapcontext(&here, &uc); /* it parks at once */
    F->made++;
  }
  F->n = n, F->fn = fn, F->ctx = ctx;
  for (int i = 0; i < n; i++) F->state[i] = HOST_FIBER_RUN;
  if (!F->order_read) F->order = host_fiber_order_read(), F->order_read = 1;
  for (;;) {
    int nw = (n + 31) / 32;
    host_fiber_order_draw(&F->order, F->wperm, nw);
    for (volatile int wi = 0; wi < nw; wi++) { /* warp by warp, each as far as it goes */
      volatile int w0 = 32 * F->wperm[wi]; /* (volatile: read after _longjmp returns here) */
      volatile int w1 = w0 + 32 < n ? w0 + 32 : n;
      for (;;) {
        host_fiber_order_draw(&F->order, F->lperm, w1 - w0);
        for (volatile int li = 0; li < w1 - w0; li++) {
          int i = w0 + F->lperm[li];
          if (F->state[i] == HOST_FIBER_RUN) {
            F->cur = i;
            if (enter) enter(i, ctx);
            if (!_setjmp(F->sched)) _longjmp(F->jb[i], 1);
          }
        }
        int at_warp = 0;
        for (int i = w0; i < w1; i++) at_warp += F->state[i] == HOST_FIBER_WARP;
        if (!at_warp) break;
        if (at_warp < w1 - w0) { /* a warp wait that not all of the warp reached */
          F->made = 0;
          return false;
        }
        for (int i = w0; i < w1; i++) F->state[i] = HOST_FIBER_RUN;
      }
    }
    int done = 0;
    for (int i = 0; i < n; i++) done += F->state[i] == HOST_FIBER_DONE;
    if (done == n) return true;
    if (done) {
      F->made = 0; /* the waiting fibers are abandoned: made anew (on the same stacks) next run */
      return false;
    }
    if (sync) sync(ctx);
    for (int i = 0; i < n; i++) F->state[i] = HOST_FIBER_RUN;
  }
}

#endif
