/*
 * tmp_files.h — a test's scratch folder and files in it (test_rtio.c, test_kcache.c):
 * make_tmpdir(tag) makes /tmp/mpl_TAG_XXXXXX, remove_tmpdir removes it with what it holds,
 * tmp_path names a file in it (four names live at once), write_bytes writes one.
 * Include after check.h.
 */
#ifndef MPL_TEST_TMP_FILES_H
#define MPL_TEST_TMP_FILES_H

#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

static void make_tmpdir(const char *tag) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/mpl_%s_XXXXXX", tag);
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

static const char *tmp_path(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
  return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

#endif
