# args: --emit=plan --mesh pp=2 --mem-limit 23298085
# input: tests/e2e/balance_model.mpl
# The balancer counts a param four times under AdamW (the param, its gradient, two moments):
# at this --mem-limit, inside the band where that count decides, rank 0 gets the split with
# an arena of 8269824 bytes (pass 119: counting a param once gave another split, 8531968).
