# realxen-lab config for the agent's overhead (benchmarks/bench_capture_overhead.py): steady
# I/O at the guest's maximum rate (rate=0), run once with the agent (EXTRA=lab/agent) and
# once without; the window is blkback's counters from when the agent had started (or the
# vbd connected, without it) to just before shutdown.
SCENARIOS="steady"
TRACE_SECS=8
RING_SECS=1
RING_HZ=10
RATE_steady=0
AGENT_WARMUP=${AGENT_WARMUP:-75}
