"""The pure domain of TwinLedger: values, aggregates, events and the simulation engine.

Nothing in this package performs I/O; it depends only on the standard library,
msgspec (for typed, immutable values) and eventsourcing's domain module.
"""
