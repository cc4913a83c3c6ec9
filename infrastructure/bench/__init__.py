"""`twinledger bench`: the ledger's write, projection and query paths measured side by side
with baselines, on the same generated data, in one process run (docs/performance.md)."""
