# args: --emit=kernels --precision bf16
# input: tests/golden/models/tied.mpl
# The fused cross-entropy's step (ce_fuse.c) in bf16: x and the tied weight rounded, one ce
# step forward (the loss, dx1 and dw1 rounded), the backward's MULs by dloss in kernels, the
# block of rows mplc chose.
