# Reports every function in the C++ files given that is longer than MAX
# lines (default 80): from the line of its body's "{" to the line of its
# "}", both included (clang-tidy's readability-function-size counts one
# line fewer; on src/ the two agree on every function over 60 lines).
# A brace-depth scan: comments, string, character and raw string literals
# and preprocessor lines are skipped; a "{" outside any function opens a
# function body when the text before it ends like a parameter list ("...)",
# then const/noexcept/override/final/&/&&/-> type) and has no "=" outside
# parentheses (a lambda or an initialiser at namespace scope). Lambdas count
# as part of the function they are in. Prints file:line: name (N lines).
# Usage: awk -v MAX=80 -f function_size.awk FILE...; exit status 1 if any.
BEGIN { if (MAX == "") MAX = 80; bad = 0 }
FNR == 1 { depth = 0; func_depth = 0; head = ""; in_comment = 0; raw_end = ""; in_pp = 0 }
{
  line = $0
  if (raw_end != "") {  # inside a raw string literal
    k = index(line, raw_end)
    if (k == 0) next
    line = substr(line, k + length(raw_end))
    raw_end = ""
  }
  if (in_pp) { in_pp = (line ~ /\\$/); next }
  if (!in_comment && line ~ /^[ \t]*#/) { in_pp = (line ~ /\\$/); next }
  n = length(line)
  for (i = 1; i <= n; i++) {
    c = substr(line, i, 1)
    if (in_comment) {
      if (c == "*" && substr(line, i + 1, 1) == "/") { in_comment = 0; i++ }
      continue
    }
    if (c == "/" && substr(line, i + 1, 1) == "/") break
    if (c == "/" && substr(line, i + 1, 1) == "*") { in_comment = 1; i++; continue }
    if (c == "\"") {
      if (i > 1 && substr(line, i - 1, 1) == "R") {  # R"delim( ... )delim"
        p = index(substr(line, i + 1), "(")
        delim = substr(line, i + 1, p - 1)
        rest = substr(line, i + p + 1)
        k = index(rest, ")" delim "\"")
        if (k == 0) { raw_end = ")" delim "\""; break }
        i = i + p + k + length(delim) + 1
        head = head " \"\""
        continue
      }
      for (i++; i <= n; i++) {
        d = substr(line, i, 1)
        if (d == "\\") { i++; continue }
        if (d == "\"") break
      }
      head = head " \"\""
      continue
    }
    if (c == "'") {
      if (i > 1 && substr(line, i - 1, 1) ~ /[0-9A-Fa-f]/) continue  # a digit separator
      for (i++; i <= n; i++) {
        d = substr(line, i, 1)
        if (d == "\\") { i++; continue }
        if (d == "'") break
      }
      continue
    }
    if (c == "{") {
      depth++
      if (func_depth == 0 && is_function(head)) { func_depth = depth; func_line = FNR; func_head = head }
      head = ""
      continue
    }
    if (c == "}") {
      if (func_depth == depth) {
        lines = FNR - func_line + 1
        if (lines > MAX) {
          printf "%s:%d: %s (%d lines, at most %d)\n", FILENAME, func_line, name_of(func_head), lines, MAX
          bad = 1
        }
        func_depth = 0
      }
      depth--
      head = ""
      continue
    }
    if (c == ";") { head = ""; continue }
    head = head c
  }
  head = head " "
}
END { exit bad }

function is_function(h,    t, prev) {
  t = h
  gsub(/operator[ \t]*\(\)/, "operator", t)
  gsub(/operator[^A-Za-z0-9_ \t(]+/, "operator", t)
  if (t !~ /\)[ \t]*((const|noexcept|override|final|volatile|mutable|&|&&)[ \t]*)*(->[^{}]*)?[ \t]*$/ &&
      t !~ /\)[ \t]*:.*\)[ \t]*$/)
    return 0
  # Parenthesised text removed (innermost first): an "=" left is an initialiser.
  prev = ""
  while (t != prev) { prev = t; gsub(/\([^()]*\)/, "", t) }
  return t !~ /=/
}

function name_of(h,    t) {
  t = h
  gsub(/[ \t]+/, " ", t)
  sub(/^ /, "", t)
  sub(/\(.*/, "", t)
  return t
}
