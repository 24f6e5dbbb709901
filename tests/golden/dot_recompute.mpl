# args: --emit=dot
# input: tests/golden/models/recompute.mpl
# Graphviz drawing of the @recompute model.
