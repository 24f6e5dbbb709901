# args: --emit=plan --mesh pp=2 --schedule zbv --microbatches 8
# input: tests/golden/models/gpt_auto.mpl
# The plan of a balanced GPT under zbv: four stages, rank 0 holds stages 0 and 3.
