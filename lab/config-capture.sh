# realxen-lab config for the capture runs (CONFIG=lab/config-capture.sh): the lab's five
# scenarios as in its config-all.sh, with the agent given time to attach before each
# scenario's operation (bpftrace compiles the program in the emulated dom0).
SCENARIOS="steady nopersist detach saverestore rebind"
TRACE_SECS=2
POST_SECS=1
PRE_SECS=1
DETACH_TRACE_SECS=90
SR_TRACE_SECS=90
RB_TRACE_SECS=90
UNBOUND_SECS=2
RATE_steady=15
RATE_nopersist=15
DOMU_RATE_DEFAULT=15
RING_HZ=333
RING_MAX=800
RING_SECS=2.5
RING_HZ_EVENT=250
RING_MAX_EVENT=1000
EV_RING_SECS=120
# one capture for the whole run (lab/agent): the first scenario waits for it in agent_stop
AGENT_WARMUP=${AGENT_WARMUP:-3}
