# args: --emit=bogus
# input: tests/golden/models/gpt_auto.mpl
# --emit with an unknown dump.
