#!/usr/bin/env bash
# The documentation stays true to the code:
#  (a) no file of the repository (tracked, or new and not ignored) points outside it, to
#      the team's shared folder next to the checkout or to the docs kept there;
#  (b) every option that `mplc --help` and `mplrun --help` list (long ones, and the short
#      ones in backquotes) appears in docs/LANGUAGE.md or README.md;
#  (c) every def of stdlib/nn.mpl appears in docs/LANGUAGE.md as a call `NAME(`;
#  (d) every complete program in a fenced code block of docs/LANGUAGE.md and README.md
#      (a block with a line `model NAME(`) compiles with `mplc --emit=graph`, except a block
#      whose first line is `# needs: v2` (it uses what this implementation does not do yet,
#      so docs/LANGUAGE.md says so); at least one block is compiled.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }
LANG_MD=docs/LANGUAGE.md
for f in "$LANG_MD" docs/ARCHITECTURE.md README.md; do
  [ -f "$f" ] || { bad "$f is missing"; finish; }
done

# ---- (a) nothing points outside the repository ----
# (the patterns are written so that this script does not match them itself)
outside='\.\./shared|shared/[d]ocs'
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  hits=$(git grep --untracked -I -n -E "$outside" -- . 2>/dev/null)
else
  hits=$(grep -rIn -E "$outside" --exclude-dir=.git --exclude-dir="$BUILD" . 2>/dev/null)
fi
if [ -z "$hits" ]; then ok "no file points outside the repository (pattern $outside)"
else bad "files point outside the repository: $(echo "$hits" | head -n 5 | tr '\n' ' ')"; fi

# ---- (b) every flag of the --help texts is documented ----
for tool in mplc mplrun; do
  if ! "$BUILD/$tool" --help > "$tmp/$tool.help" 2>&1; then bad "$tool --help fails"; continue; fi
  flags=$(grep -oE -- '--[a-z][a-z0-9-]*' "$tmp/$tool.help" | sort -u)
  shorts=$(grep -oE -- '(^|[[ |])-[a-zA-Z]\b' "$tmp/$tool.help" | grep -oE -- '-[a-zA-Z]' | sort -u)
  [ -n "$flags" ] || { bad "$tool --help lists no long flag"; continue; }
  missing=""
  for f in $flags; do
    grep -qE -- "$f([^a-z0-9-]|$)" "$LANG_MD" README.md || missing="$missing $f"
  done
  for f in $shorts; do
    grep -qF -- "\`$f" "$LANG_MD" README.md || missing="$missing $f"
  done
  n=$(echo $flags $shorts | wc -w)
  if [ -z "$missing" ]; then ok "$tool: the $n flags of --help are documented"
  else bad "$tool: flags of --help missing from $LANG_MD and README.md:$missing"; fi
done

# ---- (c) every def of nn.mpl is documented ----
defs=$(sed -nE 's/^def ([A-Za-z_][A-Za-z0-9_]*)\(.*/\1/p' stdlib/nn.mpl)
[ -n "$defs" ] || bad "stdlib/nn.mpl has no def"
missing=""
for d in $defs; do grep -qE "(^|[^A-Za-z0-9_])$d\(" "$LANG_MD" || missing="$missing $d"; done
if [ -z "$missing" ]; then ok "the $(echo $defs | wc -w) defs of stdlib/nn.mpl are in $LANG_MD"
else bad "defs of stdlib/nn.mpl missing from $LANG_MD:$missing"; fi

# ---- (d) the complete programs in the docs compile ----
# awk writes each fenced block of FILE to $tmp/blocks/TAG_N.mpl and lists its name,
# start line and kind: "program", "v2" (skipped) or "text" (no model: not a program).
mkdir -p "$tmp/blocks"
extract() { # FILE TAG
  awk -v dir="$tmp/blocks" -v tag="$2" '
    /^```/ { if (!inb) { inb = 1; n++; start = NR; first = ""; prog = 0; out = dir "/" tag "_" n ".mpl"; printf "" > out; next }
             inb = 0; close(out); print out, start, (first ~ /^# needs: v2[ \t]*$/ ? "v2" : prog ? "program" : "text"); next }
    inb { if (first == "" && NR == start + 1) first = $0; if ($0 ~ /^model [A-Za-z_][A-Za-z0-9_]*\(/) prog = 1; print > out }
  ' "$1"
}
compiled=0
for src in "$LANG_MD" README.md; do
  tag=$(basename "$src" .md)
  while read -r file line kind; do
    case $kind in
      v2) echo "skip $src:$line (# needs: v2)" ;;
      program)
        compiled=$((compiled + 1))
        if "$MPLC" "$file" --emit=graph > /dev/null 2> "$tmp/err"; then ok "$src:$line: the program compiles"
        else bad "$src:$line: the program does not compile: $(grep -m 2 error "$tmp/err" | tr '\n' ' ')"; fi ;;
    esac
  done < <(extract "$src" "$tag")
done
[ $compiled -gt 0 ] || bad "no complete program found in the docs' code blocks"

# ---- (e) a block introduced as "This is `examples/NAME.mpl`:" is that file ----
# (its lines but the comments: README's short example once differed from the file it ran)
while IFS=: read -r line ex; do
  awk -v from="$line" 'NR > from && /^```/ { if (inb) exit; inb = 1; next } inb' README.md | grep -v '^#' > "$tmp/readme_ex"
  if grep -v '^#' "$ex" | diff -q - "$tmp/readme_ex" > /dev/null; then ok "README.md:$line: the example is $ex"
  else bad "README.md:$line: the example differs from $ex: $(grep -v '^#' "$ex" | diff - "$tmp/readme_ex" | head -n 4 | tr '\n' ' ')"; fi
done < <(grep -n -oE '^This is `examples/[a-z_0-9]+\.mpl`:' README.md | sed -E 's/^([0-9]+):This is `(.*)`:/\1:\2/')
finish
