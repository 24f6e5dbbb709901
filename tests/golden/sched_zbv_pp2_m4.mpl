# args: --emit=schedule --mesh pp=2 --schedule zbv --microbatches 4
# input: tests/golden/models/gpt_auto.mpl
# zbv (ZB-V), pp = 2, 4 micro-batches: stages 0..3 in a V, rank 0 holds stages 0 and 3
# (the tied embedding's two uses: no tied all-reduce between ranks), rank 1 stages 1
# and 2 (their edge needs no message); W deferred as under zb.
