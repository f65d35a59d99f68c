"""Context: each customer's cross-channel context document, its views and the agent's reads."""
