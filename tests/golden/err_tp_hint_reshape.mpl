# args: --emit=grad --mesh tp=2
# Both reshapes keep w's split (the first passes a size-1 part of the split dimension and
# splits the next); only the loss needs the whole value. The refusal once carried the
# first reshape's "leading part 1" hint, which did not apply (pass 50).
model m(x: f32[B, 12], y: i32[B]) {
  param w: f32[12, 24] = normal(0.3) @shard(1)
  h = reshape(x @ w, B, 1, 24)
  h = reshape(h, B, 24)
  return cross_entropy(h, y)
}
train m { batch = 8 }
