"""Journey: identity graph, customer context, timeline, facts ledger and the agent API."""
