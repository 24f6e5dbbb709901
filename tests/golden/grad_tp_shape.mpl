# args: --emit=grad
# input: tests/e2e/v2/tp_shape.mpl
# Splits survive repeat (an expand between two reshapes, also along the split axis),
# stack (reshapes and a concat), expand, concat, slices and int indices at tp = 2
# (issue 13): one tp_enter, one all-reduce, no all-gather.
