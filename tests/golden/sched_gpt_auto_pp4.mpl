# args: --emit=schedule --mesh pp=4
# input: tests/golden/models/gpt_auto.mpl
# 1f1b on 4 balanced stages, 4 micro-batches.
