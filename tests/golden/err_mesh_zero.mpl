# args: --emit=schedule --mesh pp=0
# input: tests/golden/models/gpt_auto.mpl
# --mesh pp=0.
