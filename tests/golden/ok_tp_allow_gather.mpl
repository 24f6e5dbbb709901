# args: --emit=grad --allow-gather
# input: tests/golden/err_tp_regather.mpl
# With --allow-gather the split h is all-gathered before the softmax (and its gradient
# sliced back): the plan the error of err_tp_regather refuses by default.
