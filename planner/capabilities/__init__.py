"""Built-in, deterministic capabilities (the offline demo catalog of ARCHITECTURE.md).

One module per capability; to add one, copy a neighbour, list its dotted
path in `settings.FLEX_CAPABILITIES` and give it a test file in
`tests/planner/`.
"""
