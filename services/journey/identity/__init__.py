"""Identity: resolving every event to one customer (the identity graph), merges and splits."""
