# args: --emit=grad
# input: tests/golden/models/mlp2.mpl
# The backward of an MLP on 2 stages: B (input-gradient) and W (weight-gradient) parts.
