# args: --emit=partition --mesh pp=2 --mem-limit=12Q
# input: tests/golden/models/gpt_auto.mpl
# A --mem-limit that is not a byte count.
