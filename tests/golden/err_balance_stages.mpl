# args: --emit=partition --mesh pp=16
# input: tests/golden/models/gpt_auto.mpl
# Cannot balance 16 stages over 9 top-level statements.
