/*
 * cuda_bits.h — CUDA's bit-cast intrinsics as host C, for the tests that run CUDA C on the
 * host (cuda_host.h: the runtime's own programs; cuda_gen_host.h: the kernels mplc
 * generates). memcpy, so no aliasing rule is bent.
 */
#ifndef MPL_TEST_CUDA_BITS_H
#define MPL_TEST_CUDA_BITS_H

#include <string.h>

static inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, sizeof u);
  return u;
}
static inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static inline int __float_as_int(float f) { return (int)__float_as_uint(f); } /* (gcc: modulo 2^32) */
static inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }

#endif
