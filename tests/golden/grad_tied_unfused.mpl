# args: --emit=grad --no-fused-ce
# input: tests/golden/models/tied.mpl
# grad_tied with mplc --no-fused-ce: the logits stay a matmul (tb) and a cross_entropy, the
# backward a ce_grad and two matmuls.
