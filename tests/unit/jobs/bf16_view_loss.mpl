# A loss that is a view (a reshape) of a product's result, which bf16 rounds: the runtime
# reads the loss as f32, so bf16 storage must leave it wide (tests/unit/test_bf16.c; pass 104:
# without that rule the run printed loss 0.0000 every step).
model m(x: f32[B, 32], y: i32[B]) {
  param w: f32[32, 1] = normal(0.1)
  param u: f32[1, B] = normal(0.1)
  return reshape(u @ (x @ w))
}
train m { data = synthetic(64); batch = 16; optimizer = sgd(lr = 1e-2); steps = 3; seed = 3; precision = bf16 }
