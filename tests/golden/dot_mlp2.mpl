# args: --emit=dot
# input: tests/golden/models/mlp2.mpl
# Graphviz drawing of the partitioned MLP.
