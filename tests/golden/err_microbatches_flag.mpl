# args: --emit=partition --mesh pp=2 --microbatches 99999999999
# input: tests/golden/models/gpt_auto.mpl
# A --microbatches past 65536, the job reader's bound: a malformed command line (exit 2), as 0 is.
