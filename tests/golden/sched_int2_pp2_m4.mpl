# args: --emit=schedule --mesh pp=2 --schedule interleaved(2) --microbatches 4
# input: tests/golden/models/gpt_auto.mpl
# interleaved(2), pp = 2, 4 micro-batches: stages 0..3, stage k on rank k mod 2.
