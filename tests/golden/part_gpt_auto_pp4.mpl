# args: --emit=partition --mesh pp=4
# input: tests/golden/models/gpt_auto.mpl
# A GPT without @stage balanced over 4 stages.
