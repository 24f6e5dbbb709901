# args: --emit=schedule
# input: tests/golden/models/mlp2.mpl
# 1f1b on pp = 2, 4 micro-batches (the program's own settings).
