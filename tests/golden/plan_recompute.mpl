# args: --emit=plan
# input: tests/golden/models/recompute.mpl
# Memory plan with @recompute (smaller stash).
