# args: --emit=schedule
# input: tests/golden/plan_gpt_mesh.mpl
# The update phase of a dp 2 x pp 2 x tp 2 mesh with ZeRO-1 and grad_clip, as compiled:
# the tied embedding's exchange, reduce-scatters, the norm (split params on every tp
# index, whole ones on tp index 0), clipping and updating each replica's chunk, all-gathers.
