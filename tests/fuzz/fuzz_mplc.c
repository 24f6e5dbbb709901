/*
 * fuzz_mplc.c — libFuzzer target for the front end and the middle end.
 *
 * Any input bytes are a program: parse, check, and, when it checks, differentiate
 * and partition it. Diagnostics go to /dev/null. A crash, a hang, a sanitizer report
 * or an internal die() (abort) is a finding; user errors are not.
 */
#include "compiler/mplc.h"
#include "compiler/autodiff.h"
#include "compiler/partition.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (!devnull) devnull = fopen("/dev/null", "w");
  if (size > 64 * 1024) return 0;
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = 0;
  Arena a;
  arena_init(&a);
  Diag d;
  diag_init(&d, &a, devnull);
  Node *prog = parse_source(&d, &a, "fuzz.mpl", text, size);
  if (d.nerrors == 0) {
    CompileOptions opt = {.stdlib_dir = "stdlib", .gpu_arch = "sm_90"};
    Graph *g = sema_program(&d, &a, prog, &opt);
    if (g && d.nerrors == 0 && g->nops < 20000) {
      graph_verify(g);
      if (bal_stages(&d, g, 0) == 0 && ad_backward(g, &d) == 0) {
        Partition *p = part_build(&d, g);
        (void)p;
      }
    }
  }
  arena_free(&a);
  free(text);
  return 0;
}
