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

# NODE_EXTRA_CA_CERTS makes every Node process load and parse those certificates when it starts, before any
# script runs: on the machine we measure on, whose environment sets it to Debian's bundle of 144
# certificates, `node -e 0` takes 0.137 s with it and 0.050 s without (medians of 15). It is the
# environment's setting, not the tool's (a conversion reaches no TLS server), and it would add that much to
# every Node run and nothing to the C tools', so the timed runs go without it.
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then
  echo "note: NODE_EXTRA_CA_CERTS is unset for the timed runs (Node reads it at every start)" >&2
  unset NODE_EXTRA_CA_CERTS
fi
