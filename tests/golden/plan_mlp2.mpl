# args: --emit=plan
# input: tests/golden/models/mlp2.mpl
# Memory plan of the MLP (regenerate with make golden-update when fusion changes).
