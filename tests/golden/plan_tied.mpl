# args: --emit=plan
# input: tests/golden/models/tied.mpl
# Memory plan with a tied param on both ranks.
