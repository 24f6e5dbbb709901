# arange (i32), full (dtype from the value), causal_mask (bool [T, T]).
model m(x: f32[B, T], y: i32[B]) {
  pos = arange(T)
  f = full(0.5, T)
  ones = full(1, 2, T)
  m = causal_mask(T)
  h = where(m, full(-1.0, T, T), f)
  return cross_entropy(x + cast(pos + ones[0], f32) + sum(h, axis = 0), y)
}

train m { batch = 2; seq = 5 }
