# args: --emit=partition
# input: tests/golden/models/gpt_lang.mpl
# The GPT of LANGUAGE.md on its 2 stages; wte.weight is tied across them.
