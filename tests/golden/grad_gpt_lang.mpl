# args: --emit=grad
# input: tests/golden/models/gpt_lang.mpl
# The backward of the GPT of LANGUAGE.md (tied unembedding: two uses of wte.weight).
