# args: --emit=schedule --mesh dp=2
# input: tests/golden/models/tied.mpl
# Plain data parallelism: one dp all-reduce per gradient before the update.
