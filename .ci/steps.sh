# Sourced by .ci/run and .ci/suites: one `step` per stage, each printing the time the previous
# stage took and the time since the start, so a slow stage shows in the log.
export CARGO_TERM_COLOR=never
# A one-shot build gains nothing from incremental state (2 GB of it in target/debug/incremental).
export CARGO_INCREMENTAL=0
__step_name=""
__step_start=$SECONDS
step() {
  if [ -n "$__step_name" ]; then
    printf '== done: %s in %ss (disk: %s free)\n' "$__step_name" "$((SECONDS - __step_start))" \
      "$(df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' ')"
  fi
  __step_name="$1"
  __step_start=$SECONDS
  printf '\n== %s (at %ss)\n' "$1" "$SECONDS"
}
