# Sourced by .ci/run and .ci/suites: one `step` per stage, each printing the time the previous
# stage took and the time since the start, so a slow stage shows in the log.
export CARGO_TERM_COLOR=never
__step_name=""
__step_start=$SECONDS
step() {
  if [ -n "$__step_name" ]; then
    printf '== done: %s in %ss\n' "$__step_name" "$((SECONDS - __step_start))"
  fi
  __step_name="$1"
  __step_start=$SECONDS
  printf '\n== %s (at %ss)\n' "$1" "$SECONDS"
}
