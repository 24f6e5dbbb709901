# args: --emit=partition --mesh pp=2 --mem-limit 1K
# input: tests/golden/models/gpt_auto.mpl
# No split fits --mem-limit; the message gives the best split's need.
