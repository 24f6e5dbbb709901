/*
 * mpltok.c — turns any file into an llm.c token file, one token per byte
 * (vocabulary 256), so a character-level model can train on it.
 *
 *   mpltok INPUT.txt OUTPUT.bin
 */
#include "mpl.h"

#include <stdlib.h>
#include <sys/stat.h>

static const char usage[] = "usage: mpltok INPUT OUTPUT.bin\n"
                            "  writes INPUT's bytes as an llm.c token file (one token per byte, vocabulary 256)\n";

int main(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { /* asked for: stdout, 0 (as mplc's) */
    fputs(usage, stdout);
    return 0;
  }
  if (argc != 3) {
    fputs(usage, stderr);
    return 2;
  }
  uint8_t *data;
  size_t len;
  MplErr err;
  struct stat in, out;
  if (stat(argv[1], &in) == 0 && stat(argv[2], &out) == 0 && S_ISREG(in.st_mode) && in.st_dev == out.st_dev &&
      in.st_ino == out.st_ino) { /* the token file would replace the text it is made from */
    fprintf(stderr, "mpltok: error: %s is the input %s: give the token file another name\n", argv[2], argv[1]);
    return 1;
  }
  if (mpl_file_read_all(argv[1], &data, &len, &err) != MPL_OK) {
    fprintf(stderr, "mpltok: error: %s\n", err.msg);
    return 1;
  }
  if (len < 2) {
    fprintf(stderr, "mpltok: error: %s: a token file needs at least 2 bytes of text\n", argv[1]);
    return 1;
  }
  if (len > (size_t)INT32_MAX) { /* the header's token count is an int32 (llm.c's format) */
    fprintf(stderr, "mpltok: error: %s: %zu bytes, more tokens than a token file holds (at most %d)\n", argv[1], len,
            INT32_MAX);
    mpl_free(data);
    return 1;
  }
  uint16_t *tok = mpl_malloc(len * sizeof *tok);
  if (!tok) {
    fprintf(stderr, "mpltok: error: out of memory for %zu tokens of %s\n", len, argv[1]);
    mpl_free(data);
    return 1;
  }
  for (size_t i = 0; i < len; i++) tok[i] = data[i];
  int rc = mpl_tokens_write(argv[2], tok, (int64_t)len, &err);
  if (rc != MPL_OK) fprintf(stderr, "mpltok: error: %s\n", err.msg);
  else printf("%s: %zu tokens (bytes) from %s\n", argv[2], len, argv[1]);
  mpl_free(tok);
  mpl_free(data);
  if (rc != MPL_OK) return 1;
  return mpl_stdout_check("mpltok"); /* its line lost (> /dev/full) is an error, as in mplc and mplrun */
}
