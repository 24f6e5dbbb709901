# args: --emit=dot
# input: tests/golden/models/tied.mpl
# Graphviz drawing of the tied-embedding model.
