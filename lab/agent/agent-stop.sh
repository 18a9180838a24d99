#!/bin/sh
# realxen-lab hook: `sh agent-stop.sh SCENARIO_DIR`: stop the capture (SIGINT) and wait for it.
P=/run/bx-capture.pid
[ -f $P ] || exit 0
echo "$(ringdump now) agent-stop"
kill -INT "$(cat $P)" 2>/dev/null
while kill -0 "$(cat $P)" 2>/dev/null; do sleep 0.2; done
rm -f $P
echo "$(ringdump now) agent-stop: done"
