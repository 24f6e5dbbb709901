# args: --emit=schedule
# input: tests/golden/models/recompute.mpl
# @recompute does not change the schedule's shape.
