# args: --emit=partition --mesh pp=2 --schedule interleaved(+2)
# input: tests/golden/models/gpt_auto.mpl
# interleaved(v) takes digits: a sign or a space was accepted.
