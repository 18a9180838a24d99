#!/bin/sh
# realxen-lab hook: `sh agent-stop.sh SCENARIO_DIR`. The capture runs on across scenarios
# (agent-start.sh); this only notes the moment, so each scenario's part can be found.
echo "$(ringdump now) agent-stop (the capture keeps running)"
