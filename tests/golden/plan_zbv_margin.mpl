# args: --emit=plan --mesh pp=2 --schedule zbv
# input: tests/e2e/half_scalars.mpl
# zbv keeps the split by stages (ranks 0 and 1 hold stages 0 3 and 1 2, predicted bubble
# 0.42) where the split by ranks is not 3% shorter (it would predict 0.4385).
