# Sourced by the real pair's GPU scripts (not run).
# await_pids LABEL GLOB PERIOD PID...: until every PID has ended, every PERIOD seconds, print LABEL, the
# script's seconds so far and how many files GLOB matches (nothing for an empty GLOB); then reap them. By
# pid: a bare `wait` would also wait for the `tee` of the script's own output (bash waits for the last
# process substitution), which never ends.
await_pids() {
  local label=$1 glob=$2 period=$3 p alive
  shift 3
  while :; do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && { alive=1; break; }; done
    [ "$alive" = 1 ] || break
    sleep "$period"
    [ -z "$glob" ] || echo "[$label] ${SECONDS}s: $(compgen -G "$glob" | wc -l) point(s) written"
  done
  wait "$@" 2>/dev/null
}
