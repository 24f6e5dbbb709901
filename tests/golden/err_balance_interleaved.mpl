# args: --emit=schedule --mesh pp=2 --schedule interleaved(5)
# input: tests/golden/models/gpt_auto.mpl
# interleaved(5) on pp = 2 needs 10 stages; the model has 9 statements.
