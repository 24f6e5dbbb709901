# args: --emit=schedule
# input: tests/golden/models/tied.mpl
# A tied group: allreduce_tied on both ranks before the optimizer step.
