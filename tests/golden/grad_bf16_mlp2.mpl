# args: --emit=grad --precision bf16
# input: tests/golden/models/mlp2.mpl
# precision = bf16 (compiler/precision.c, after autodiff): every product's operands and
# result rounded (round_bf16), the backward's too; an activation's rounding is made once
# on its stage (the weight gradient's product reads the forward's), a param's once per pass.
