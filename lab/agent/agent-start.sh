#!/bin/sh
# realxen-lab hook (EXTRA=lab/agent): `sh agent-start.sh SCENARIO_DIR DOMID`, run by the lab's
# dom0-experiment.sh once the vbd is connected. Starts blktrace-xen capture (installed in the
# dom0 image at /opt/bx, see lab/README.md) on every ring of every domain and returns; the
# capture runs until the scenario's domain is gone (agent-stop.sh), so that it covers the
# moment the lab reads blkback's counters (blkback-stats.txt, just before shutdown).
D=$1
P=/run/bx-capture.pid
stop_capture() {
  [ -f $P ] || return 0
  kill -INT "$(cat $P)" 2>/dev/null
  while kill -0 "$(cat $P)" 2>/dev/null; do sleep 0.2; done
  rm -f $P
}
stop_capture   # the previous scenario's capture, if its domain outlived the wait
echo "$(ringdump now) agent-start domid=$2"
/opt/bx/bin/blktrace-xen capture -o "$D/agent.pcapng" --raw-log "$D/agent-raw.txt" \
  --seconds 900 > "$D/capture.out" 2> "$D/capture.err" < /dev/null &
echo $! > $P
