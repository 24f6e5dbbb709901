# args: --emit=grad
# input: tests/golden/models/recompute.mpl
# @recompute does not change the backward graph; the partition clones the forward.
