# args: --emit=schedule --mesh pp=x
# input: tests/golden/models/gpt_auto.mpl
# --mesh pp=x.
