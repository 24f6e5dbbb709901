# args: --emit=kernels
# input: tests/golden/models/mlp2.mpl
# The fused kernels of the MLP (regenerate with make golden-update when fusion changes).
