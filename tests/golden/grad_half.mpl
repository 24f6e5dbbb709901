# args: --emit=grad
# A program's own bf16 and f16 tensors: each op computed in f32 and its result rounded to
# its type (round_bf16, round_f16), the backward's ops too; a param read rounded in each
# pass that reads it; its gradient summed in f32; casts to f32 and views not rounded.
model m(x: f32[B, 4], y: i32[B]) {
  param w: bf16[4, 3] = normal(0.1)
  h = relu(cast(x, bf16) @ w)
  g = cast(exp(cast(h, f16)), f32)
  return cross_entropy(g, y)
}
train m { batch = 2 }
