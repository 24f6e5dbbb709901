# args: --emit=schedule
# input: tests/golden/models/gpt_lang.mpl
# The GPT of LANGUAGE.md: 1f1b, pp = 2, 4 micro-batches, a tied group {0,1}.
