/*
 * cg_llvm_module.c — the kernels' LLVM module (cg_llvm.c builds it) made into the job's
 * bitcode: verified (failing with the verifier's message), given the host's triple and data
 * layout, optimised with the new pass manager's default<O3> for the host target, written as
 * bitcode. The optimised bitcode is kept in the compile cache (runtime/kcache.c) under the
 * unoptimised module's: mplc compiling a program again, or with other flags that leave the
 * kernels as they were, skips the pipeline (0.43 -> 0.01 s for tests/e2e/small_gpt.mpl).
 * MPL_LLVM_DUMP=FILE (debugging) writes the optimised module as text, and so runs the
 * pipeline whatever the cache holds.
 */
#include "cg_llvm.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include "runtime/jit_cpu.h" /* mpl_llvm_host_machine, mpl_llvm_cache_context */
#include "runtime/mpl.h"     /* the compile cache */
#include <stdlib.h>
#include <string.h>

/* A malloc'd copy of n bytes into *out. */
static void copy_out(const void *p, size_t n, void **out, size_t *len) {
  *out = malloc(n ? n : 1);
  if (!*out) die("out of memory");
  memcpy(*out, p, n);
  *len = n;
}

static int optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, char *err, size_t errlen) {
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
  LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (!e) return 0;
  char *m = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "LLVM passes: %s", m);
  LLVMDisposeErrorMessage(m);
  return -1;
}

int cg_llvm_module(const KernelSet *ks, void **bc, size_t *len, char *err, size_t errlen) {
  LLVMContextRef ctx;
  LLVMModuleRef mod = cg_llvm_build(ks, &ctx);
  LLVMTargetMachineRef tm = NULL;
  LLVMMemoryBufferRef raw = NULL;
  char *msg = NULL, *key = NULL;
  uint8_t *hit = NULL;
  size_t hitlen = 0;
  int rc = -1;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "LLVM verifier: %s", msg ? msg : "(no message)");
    goto done;
  }
  if (!(tm = mpl_llvm_host_machine(LLVMRelocPIC, LLVMCodeModelDefault, err, errlen))) goto done;
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(mod, td);
  LLVMDisposeTargetData(td);
  const char *dump = getenv("MPL_LLVM_DUMP");
  if (!dump || !*dump) {
    raw = LLVMWriteBitcodeToMemoryBuffer(mod);
    key = mpl_llvm_cache_context("mplc opt 1: default<O3>, loop and SLP vectorizers, PIC");
  }
  if (key && (hit = mpl_kcache_get("opt", key, LLVMGetBufferStart(raw), LLVMGetBufferSize(raw), &hitlen))) {
    copy_out(hit, hitlen, bc, len);
    rc = 0;
    goto done;
  }
  if (optimise(mod, tm, err, errlen)) goto done;
  if (dump && *dump) {
    char *m = NULL;
    if (LLVMPrintModuleToFile(mod, dump, &m)) fprintf(stderr, "MPL_LLVM_DUMP: %s\n", m ? m : "?");
    if (m) LLVMDisposeMessage(m);
  }
  LLVMMemoryBufferRef mb = LLVMWriteBitcodeToMemoryBuffer(mod);
  copy_out(LLVMGetBufferStart(mb), LLVMGetBufferSize(mb), bc, len);
  LLVMDisposeMemoryBuffer(mb);
  if (key) mpl_kcache_put("opt", key, LLVMGetBufferStart(raw), LLVMGetBufferSize(raw), *bc, *len);
  rc = 0;
done:
  if (msg) LLVMDisposeMessage(msg);
  mpl_free(hit);
  free(key);
  if (raw) LLVMDisposeMemoryBuffer(raw);
  if (tm) LLVMDisposeTargetMachine(tm);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  return rc;
}

void cg_llvm_dump_ir(FILE *out, const KernelSet *ks) {
  LLVMContextRef ctx;
  LLVMModuleRef mod = cg_llvm_build(ks, &ctx);
  char *s = LLVMPrintModuleToString(mod);
  fputs(s, out);
  LLVMDisposeMessage(s);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
}
