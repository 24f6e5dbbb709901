# The train block names a model that does not exist.
model m(x: f32[B, 4], y: i32[B]) {
  return cross_entropy(x, y)
}
train gpt { batch = 4 }
