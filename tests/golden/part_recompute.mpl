# args: --emit=partition
# input: tests/golden/models/recompute.mpl
# @recompute: the recomputed forward runs in the recomp pass; only its inputs are stashed.
