# args: --emit=kernels --precision bf16
# input: tests/golden/models/mlp2.mpl
# precision = bf16's kernels: each rounding fused into the kernel that makes its input (its
# integer bit operations, BITCAST), the GEMM steps marked bf16.
