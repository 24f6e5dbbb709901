/*
 * run_cmd.h — a shell command run from a Check test (test_cuda.c, test_cuda_jobs.c).
 */
#ifndef MPL_TEST_RUN_CMD_H
#define MPL_TEST_RUN_CMD_H

#include <check.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

/* Runs cmd with stderr into out (one string, n bytes at most); returns the exit status
 * (128 when it did not exit). */
static inline int run_cmd(const char *cmd, char *out, size_t n) {
  char full[16384];
  size_t cl = strlen(cmd);
  ck_assert_msg(cl + 6 <= sizeof full, "command too long (%zu bytes)", cl);
  memcpy(full, cmd, cl);
  memcpy(full + cl, " 2>&1", 6);
  FILE *p = popen(full, "r");
  ck_assert(p != NULL);
  size_t len = fread(out, 1, n - 1, p);
  out[len] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#endif
