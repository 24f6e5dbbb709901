# tests/bench/table.awk — the table of tests/bench/bench.sh. One input line per row:
#   config n microbatches tokens_per_step mpl_ms mpl_flops_per_step torch_ms tuned_ms torch_cores
# ("nan" where a number is missing); -v p1=GFLOP/s p2=GFLOP/s: the GEMM peak on 1 thread
# and on 2 rank threads. Prints the table, then the targets of issue 5 that were missed.
function num(x) { return x != "nan" && x != "" && x + 0 > 0 }
function fmt_ms(x) { return num(x) ? sprintf("%.1f", x) : "-" }
function fmt_tps(tok, x) { return num(x) ? sprintf("%.0f", tok * 1000 / x) : "-" }
function fmt_ratio(a, b) { return num(a) && num(b) ? sprintf("%.2fx", b / a) : "-" }
BEGIN {
  printf "%-8s %1s %3s | %9s %9s | %9s %8s %5s | %9s %8s | %7s %7s | %7s %6s\n", "config", "n", "mb",
    "MPL ms", "MPL tok/s", "torch ms", "tok/s", "cores", "tuned ms", "tok/s", "x given", "x tuned", "GFLOP/s", "%peak"
  rule = "----------------------------------------------------------------------------------------------------------------------"
  print rule
}
{
  name = $1; n = $2; mb = $3; tok = $4; m = $5; fl = $6; g = $7; t = $8; gc = $9
  peak = n == 1 ? p1 : p2
  gf = num(m) ? fl / (m / 1000) / 1e9 : 0
  printf "%-8s %1d %3d | %9s %9s | %9s %8s %5s | %9s %8s | %7s %7s | %7.1f %5.0f%%\n", name, n, mb,
    fmt_ms(m), fmt_tps(tok, m), fmt_ms(g), fmt_tps(tok, g), (num(gc) ? sprintf("%.1f", gc) : "-"), fmt_ms(t), fmt_tps(tok, t),
    fmt_ratio(m, g), fmt_ratio(m, t), gf, (peak > 0 ? 100 * gf / peak : 0)
  if (num(g) && num(m) && g / m < 1.5)
    miss = miss sprintf("\n  %s n=%d: %.2fx PyTorch as given (target 1.5x)%s", name, n, g / m,
                        num(gc) && gc > n + 0.25 ? sprintf(", which used %.1f cores to MPL's %d", gc, n) : "")
  if (n == 1 && num(t) && num(m) && t / m < 1.0) miss = miss sprintf("\n  %s n=1: %.2fx PyTorch tuned (target 1.0x)", name, t / m)
  if (name ~ /^gpt/ && peak > 0 && gf / peak < 0.5) miss = miss sprintf("\n  %s n=%d: %.0f%% of the GEMM peak (target 50%%)", name, n, 100 * gf / peak)
}
END {
  print rule
  if (miss == "") print "targets: all met"
  else print "targets missed:" miss
}
