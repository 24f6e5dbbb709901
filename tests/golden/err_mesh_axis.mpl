# args: --emit=schedule --mesh pp=2,qq=2
# input: tests/golden/models/gpt_auto.mpl
# --mesh with an unknown axis.
