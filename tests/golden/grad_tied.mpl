# args: --emit=grad
# input: tests/golden/models/tied.mpl
# A param used on two stages: one param_grad per use.
