/*
 * jit_cpu.h — the CPU kernels of a job: LLVM bitcode (from mplc's cg_llvm_module.c)
 * compiled for the host CPU at load time, kernel functions looked up by name.
 *
 * Kernel ABI (compiler/kernel.h):
 *   void NAME(void **args, const int64_t *scalars, int64_t begin, int64_t end)
 * Invariants: one MplJit owns its compiled code until mpl_jit_free; looked-up
 * function pointers may be called from any thread concurrently; libm functions
 * the kernels call (expf, logf, tanhf, powf, ...) resolve to this process's.
 */
#ifndef MPL_JIT_CPU_H
#define MPL_JIT_CPU_H

#include <stddef.h>
#include <stdint.h>

typedef struct MplJit MplJit;
typedef void (*MplJitKernelFn)(void **args, const int64_t *scalars, int64_t begin, int64_t end);

/* Parses the bitcode and compiles it for the host (O3 code generation). NULL and a
 * message in err on failure. */
MplJit *mpl_jit_load(const void *bc, size_t len, char *err, size_t errlen);
/* The address of kernel `name`, or NULL. */
void *mpl_jit_lookup(MplJit *j, const char *name);
void mpl_jit_free(MplJit *j);

/* llvm_host.c: LLVM's native target, initialised once per process (thread-safe). */
void mpl_llvm_init_native(void);
/* The compile cache's context for code LLVM makes on this host: `what` (the kind of work and
 * its settings), LLVM's version and the file its code is in (the executable, or a shared
 * libLLVM a system update may replace), the host's triple, CPU and features (malloc'd; NULL
 * when out of memory). */
char *mpl_llvm_cache_context(const char *what);

#ifdef LLVM_C_TARGETMACHINE_H /* for files that use LLVM's C API themselves (cg_llvm_module.c) */
/* The host's LLVM target machine (its CPU name and features, O3 code generation) with the
 * relocation and code model given: the JIT's (default, JIT default) and mplc's for the
 * bitcode it optimises (PIC, default). Initialises LLVM's native target once. NULL and a
 * message in err on failure. */
LLVMTargetMachineRef mpl_llvm_host_machine(LLVMRelocMode reloc, LLVMCodeModel model, char *err, size_t errlen);
#endif

#endif
