# args: --emit=plan --mesh pp=2 --microbatches 8 --device-speed 1,0.5
# input: tests/golden/models/gpt_auto.mpl
# Rank 1's device is half as fast: the balancer gives its stage about half the work, and
# the predicted busy times (each stage's time over its rank's speed) come out near even.
