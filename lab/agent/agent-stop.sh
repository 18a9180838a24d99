#!/bin/sh
# realxen-lab hook: `sh agent-stop.sh SCENARIO_DIR`, run before the lab shuts the domain down.
# Returns at once; a watcher stops the capture (SIGINT) once the domain `rxu` is gone, so the
# capture also holds the shutdown's last requests and the moment blkback-stats.txt was read.
P=/run/bx-capture.pid
[ -f $P ] || exit 0
echo "$(ringdump now) agent-stop: capture stops when rxu is gone"
(
  while xl domid rxu >/dev/null 2>&1; do sleep 0.2; done
  sleep 1
  kill -INT "$(cat $P)" 2>/dev/null
  while kill -0 "$(cat $P)" 2>/dev/null; do sleep 0.2; done
  rm -f $P
  echo "$(ringdump now) agent-stop: capture done" >> "$1/agent.log"
) > /dev/null 2>&1 &
