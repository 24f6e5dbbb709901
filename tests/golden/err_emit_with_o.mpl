# args: --emit=plan -o /tmp/mpl_never_written.job
# -o with --emit: --emit stops before the job, so this is exit 2, not a job silently not written.
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train m {
  batch = 4
}
