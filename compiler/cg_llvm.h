/*
 * cg_llvm.h — between the two halves of the CPU code generator: cg_llvm.c builds the
 * kernels' LLVM module from the kernel IR, cg_llvm_module.c verifies, optimises and writes
 * it (kernel.h's cg_llvm_module, cg_llvm_dump_ir).
 */
#ifndef MPL_CG_LLVM_H
#define MPL_CG_LLVM_H

#include <llvm-c/Core.h>

#include "kernel.h"

/* The module of every kernel of ks (unoptimised, no target set), in a context of its own
 * returned in *ctx: the caller disposes of the module, then the context. */
LLVMModuleRef cg_llvm_build(const KernelSet *ks, LLVMContextRef *ctx);

#endif
