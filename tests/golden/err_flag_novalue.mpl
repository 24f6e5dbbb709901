# args: --emit=schedule --mesh
# input: tests/golden/models/gpt_auto.mpl
# A flag with its value missing.
