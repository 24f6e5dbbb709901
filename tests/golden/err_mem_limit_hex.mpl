# args: --emit=partition --mesh pp=2 --mem-limit 0x10
# input: tests/golden/models/gpt_auto.mpl
# --mem-limit is decimal: strtod read 0x10 as 16 bytes (and inf, nan).
