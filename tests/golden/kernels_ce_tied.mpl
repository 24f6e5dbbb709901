# args: --emit=kernels --precision bf16
# input: tests/golden/models/tied.mpl
# The fused cross-entropy's steps (ce_fuse.c) in bf16: x and the tied weight rounded, one ce
# step forward and one ce_bwd (dx and dw) backward, the chunk of classes mplc chose.
