# realxen-lab config for the agent's overhead (benchmarks/bench_capture_overhead.py): the
# steady scenario with blkload at rate=0 (as fast as the emulated host goes), run once with
# the agent (EXTRA=lab/agent) and once without. nopersist runs first at the usual rate:
# with the agent, bpftrace compiles its program then (it starves when the guest runs at
# full rate), so the agent is attached before the steady domain even starts; both runs
# measure steady's window the same way (vbd connected -> just before shutdown).
SCENARIOS="nopersist steady"
RATE_nopersist=15
RATE_steady=0
TRACE_SECS=8
RING_SECS=1
RING_HZ=10
AGENT_WARMUP=${AGENT_WARMUP:-3}
