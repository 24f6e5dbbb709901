/*
 * llvm_host.c — LLVM's view of the host, shared by mplc (cg_llvm_module.c optimises the job's
 * bitcode for it) and mplrun (jit_cpu.c compiles that bitcode): the native target,
 * initialised once per process, the host's target machine, and the compile cache's
 * context for what LLVM makes on it.
 */
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <limits.h>
#include <llvm/Config/llvm-config.h> /* LLVM_VERSION_STRING */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jit_cpu.h" /* after LLVM's headers: it then declares mpl_llvm_host_machine */
#include "mpl.h"        /* mpl_kcache_lib_id */

static pthread_once_t llvm_once = PTHREAD_ONCE_INIT;

static void llvm_init(void) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
}

void mpl_llvm_init_native(void) { pthread_once(&llvm_once, llvm_init); }

LLVMTargetMachineRef mpl_llvm_host_machine(LLVMRelocMode reloc, LLVMCodeModel model, char *err, size_t errlen) {
  mpl_llvm_init_native();
  char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    snprintf(err, errlen, "llvm: target %s: %s", triple, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, feat, LLVMCodeGenLevelAggressive, reloc, model);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  if (!tm) snprintf(err, errlen, "llvm: cannot create a target machine for the host");
  return tm;
}

char *mpl_llvm_cache_context(const char *what) {
  char *triple = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
  char lib[PATH_MAX + 128];
  mpl_kcache_lib_id((const void *)(uintptr_t)&LLVMCreateTargetMachine, lib, sizeof lib);
  size_t n = strlen(what) + strlen(triple) + strlen(cpu) + strlen(feat) + strlen(lib) + 64;
  char *c = malloc(n);
  if (c) snprintf(c, n, "%s; LLVM " LLVM_VERSION_STRING " (%s); %s; %s; %s", what, lib, triple, cpu, feat);
  LLVMDisposeMessage(triple), LLVMDisposeMessage(cpu), LLVMDisposeMessage(feat);
  return c;
}
