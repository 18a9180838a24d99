#!/bin/sh
# realxen-lab hook (EXTRA=lab/agent): `sh agent-start.sh SCENARIO_DIR DOMID`, run by the lab's
# dom0-experiment.sh once a scenario's vbd is connected. The first call starts one
# `blktrace-xen capture` (installed in the dom0 image at /opt/bx, see lab/README.md) for the
# whole run, as an operator would leave it running on a host: it follows every ring of every
# domain of every scenario. bpftrace needs minutes to compile the program in the emulated
# dom0, so the first call waits until the probes are attached (the lab's agent_stop waits
# for this script), then lets the first scenario's I/O run on for a while.
D=$1
P=/run/bx-capture.pid
echo "$(ringdump now) agent-start domid=$2"
if [ -f $P ] && kill -0 "$(cat $P)" 2>/dev/null; then
  echo "capture already running (pid $(cat $P)), writing $(cat /run/bx-capture.out)"
  exit 0
fi
echo "$D/agent.pcapng" > /run/bx-capture.out
/opt/bx/bin/blktrace-xen capture -o "$D/agent.pcapng" --raw-log "$D/agent-raw.txt" \
  --seconds 3000 > "$D/capture.out" 2> "$D/capture.err" < /dev/null &
echo $! > $P
i=0
while ! grep -q '^B ' "$D/agent-raw.txt" 2>/dev/null && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done
echo "$(ringdump now) agent-start: capture attached"
sleep 15
