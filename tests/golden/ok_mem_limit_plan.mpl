# args: --emit=plan --mesh pp=2 --mem-limit 300K
# input: tests/golden/models/gpt_auto.mpl
# A limit the plan meets (224384 bytes on rank 0) though the balancer's estimate, which errs
# high, does not (773680): the fastest split is planned and accepted (it was refused).
