# args: --emit=plan --mesh pp=2 --schedule zb --microbatches 8
# input: tests/golden/models/gpt_auto.mpl
# Memory plan of a balanced GPT under zb.
