/*
 * guarded.h — test buffers that end where a page no one may read begins, so that a kernel
 * run on the host (cuda_host.h) that reads one element past a buffer faults instead of
 * reading a neighbour's bytes (test_sdpa.c, test_embed.c). Include after check.h.
 */
#ifndef MPL_TEST_GUARDED_H
#define MPL_TEST_GUARDED_H

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* bytes of memory that end where a page no one may read begins: a kernel's read past the end
 * of a buffer faults (review pass 93: a row limit one too large read a row past dout's end,
 * which changed no result); its mapping's start and length stand in the 16 bytes before it */
static inline void *guarded(size_t bytes) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), data = (bytes + 16 + pg - 1) / pg * pg, len = data + pg;
  char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ck_assert(base != MAP_FAILED);
  ck_assert_int_eq(mprotect(base + data, pg, PROT_NONE), 0);
  char *p = base + data - bytes;
  memcpy(p - 16, &base, sizeof base), memcpy(p - 8, &len, sizeof len);
  return p;
}

static inline void unguard(void *p) {
  char *base;
  size_t len;
  if (!p) return;
  memcpy(&base, (char *)p - 16, sizeof base), memcpy(&len, (char *)p - 8, sizeof len);
  ck_assert_int_eq(munmap(base, len), 0);
}

#endif
