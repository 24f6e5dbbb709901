/*
 * mpl_rng.h — counter-based random numbers shared by the compiler's reference
 * evaluator, the CPU kernels, the CUDA kernels (the same arithmetic is emitted as
 * CUDA C) and the runtime's initialisation.
 *
 * Everything is a pure function of its arguments (no state), so every schedule,
 * layout and device sees the same numbers: a dropout mask depends only on
 * (seed, step, op key, the element's index in the step's whole batch); an init value
 * only on (seed, param name hash, element index).
 */
#ifndef MPL_RNG_H
#define MPL_RNG_H

#include <math.h>
#include <stdint.h>

/* splitmix64's finaliser: a bijective 64-bit mix. */
static inline uint64_t mpl_mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* FNV-1a of a string: the stream id of a param's init, from its global name. */
static inline uint64_t mpl_hash_name(const char *s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
  return h;
}

/* A uniform double in [0, 1) with 53 random bits, for (stream, index). */
static inline double mpl_uniform(uint64_t stream, uint64_t index) {
  return (double)(mpl_mix64(stream ^ mpl_mix64(index)) >> 11) * (1.0 / 9007199254740992.0);
}

/* The seed's stream of a name (a param's initial values, sampling): the same on every
 * rank and every mesh. */
static inline uint64_t mpl_name_stream(uint64_t seed, const char *name) {
  return mpl_mix64(mpl_mix64(seed) ^ mpl_hash_name(name));
}

/* The micro-batch number a kernel is given in an evaluation pass (sampling, validation):
 * there dropout is the identity (kernel.h's ABI; refeval's RefCtx). */
#define MPL_MB_EVAL (-1)

/* The stream of dropout masks of one op in one step. */
static inline uint64_t mpl_dropout_stream(uint64_t seed, int64_t step, int64_t key) {
  return mpl_mix64(mpl_mix64(mpl_mix64(seed) ^ (uint64_t)step) ^ (uint64_t)key);
}

/* The index of element i of a value of n elements in micro-batch mb, counted over the
 * step's whole batch: mb is the step's micro-batch number over all data-parallel
 * replicas (replica r's j-th is r * microbatches + j, the rows it reads), so with the
 * batch axis leading (it is, unless the program transposes it away) the index is the
 * element's in the whole batch, and the masks are the same for any number of
 * micro-batches and replicas. */
static inline uint64_t mpl_dropout_index(int64_t mb, int64_t n, int64_t i) {
  return (uint64_t)mb * (uint64_t)n + (uint64_t)i;
}

/* Dropout keeps element idx when this is 1 (probability 1 - p); kept values are scaled by 1/(1-p).
 * Uses 24 bits so that float and double comparisons agree exactly. */
static inline int mpl_dropout_keep(uint64_t stream, uint64_t idx, double p) {
  uint32_t r = (uint32_t)(mpl_mix64(stream ^ mpl_mix64(idx)) >> 40); /* 24 bits */
  return (double)r >= p * 16777216.0;
}

/* Standard normal for (stream, index), by Box-Muller on two uniforms. */
static inline double mpl_normal(uint64_t stream, uint64_t index) {
  double u1 = mpl_uniform(stream, 2 * index), u2 = mpl_uniform(stream, 2 * index + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
