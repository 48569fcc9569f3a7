# Sourced by the bench scripts: medians and the wall-time/peak-memory table of /usr/bin/time records.

# Median of the numbers on standard input, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# times_table HEADING DIR NAME... : a markdown table of DIR/NAME.times files, each a line "wall_s peak_kb
# [user_s sys_s]" per run. With user and sys recorded, a column of median CPU seconds (user + sys, the
# process and the children it waited for): how much of the machine a tool used, beside how long it took.
times_table() {
  local heading=$1 dir=$2 name f cpu
  shift 2
  printf '\n| %s | runs | median s | min s | max s | median CPU s | median peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|\n' "$heading"
  for name in "$@"; do
    f="$dir/$name.times"
    cpu=-
    if awk 'NF < 4 {exit 1}' "$f"; then cpu=$(awk '{print $3 + $4}' "$f" | median); fi
    printf '| %s | %d | %s | %s | %s | %s | %d |\n' "$name" "$(wc -l <"$f")" "$(cut -d' ' -f1 "$f" | median)" \
      "$(cut -d' ' -f1 "$f" | sort -n | head -1)" "$(cut -d' ' -f1 "$f" | sort -n | tail -1)" "$cpu" "$(( $(cut -d' ' -f2 "$f" | median | cut -d. -f1) / 1024 ))"
  done
}
