"""The execution engine.

- `scheduling`: which nodes are ready (pure; no ORM).
- `lease`: claim, renew and release a run (the Run table is the queue).
- `executor`: run one node's capability and validate its output.
- `retry`: the only place that decides whether a failed attempt is retried.
- `loop`: advance one claimed run, one committed step at a time.
- `worker`: worker threads and the `flex_worker` process loop.
"""
