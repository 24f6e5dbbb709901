# args: --emit=schedule --schedule interleaved(2)
# input: tests/golden/models/mlp2.mpl
# interleaved(2) on a program that places only stages 0 and 1: stages 2 and 3 are empty.
