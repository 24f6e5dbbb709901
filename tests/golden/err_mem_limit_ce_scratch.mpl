# args: --emit=plan --mem-limit 8M
# the arena (4.1 MiB) fits 8 MiB, but the fused cross-entropy's scratch (64 MiB: 1024
# positions of a 16384-word vocabulary), which the device holds beside the arena, does not:
# --mem-limit counts both (it counted the arena alone)
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 16384, 16) as wte
  return cross_entropy(x @ transpose(wte.weight, 0, 1), targets)
}
train m { batch = 8; seq = 128; steps = 1 }
