# args: --emit=plan --mesh pp=2 --mem-limit 1K
# input: tests/golden/models/gpt_auto.mpl
# No plan fits --mem-limit: the balancer's estimate (which errs high) meets it nowhere, so the fastest split is planned, and the plan's arena is over the limit.
