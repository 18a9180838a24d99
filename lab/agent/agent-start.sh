#!/bin/sh
# realxen-lab hook (EXTRA=lab/agent): `sh agent-start.sh SCENARIO_DIR DOMID`, run by the lab's
# dom0-experiment.sh once the vbd is connected. Captures every ring of every domain with
# blktrace-xen capture (installed in the dom0 image at /opt/bx, see lab/README.md) until
# agent-stop.sh, the next scenario's agent-start.sh (nopersist has no stop hook) or 900 s.
D=$1
P=/run/bx-capture.pid
if [ -f $P ]; then
  kill -INT "$(cat $P)" 2>/dev/null
  while kill -0 "$(cat $P)" 2>/dev/null; do sleep 0.2; done
  rm -f $P
fi
echo "$(ringdump now) agent-start domid=$2"
/opt/bx/bin/blktrace-xen capture -o "$D/agent.pcapng" --raw-log "$D/agent-raw.txt" \
  --seconds 900 > "$D/capture.out" 2> "$D/capture.err" &
echo $! > $P
wait
echo "$(ringdump now) agent-start: capture exited"
