# args: --emit=schedule --mesh pp=3 --microbatches 2
# input: tests/e2e/skip_no_grad.mpl
# Edges 0->1 and 0->2 carry activations only: no gradient message on rank 0, and stage
# 0's backward waits for nothing.
