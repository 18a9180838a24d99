# realxen-lab config for the agent's overhead (benchmarks/bench_capture_overhead.py): the
# steady scenario with blkload at rate=0 (as fast as the emulated host goes), run once with
# the agent (EXTRA=lab/agent) and once without. detach runs first at the usual rate: with
# the agent, its stop hook waits while bpftrace compiles (it starves when the guest runs
# at full rate), so the agent is attached before the steady domain even starts; both
# runs measure steady's window the same way (vbd connected -> just before shutdown).
SCENARIOS="detach steady"
DOMU_RATE_DEFAULT=15
PRE_SECS=1
POST_SECS=1
DETACH_TRACE_SECS=90
RATE_steady=0
TRACE_SECS=8
RING_SECS=1
RING_HZ=10
AGENT_WARMUP=${AGENT_WARMUP:-3}
