"""Privacy: one masking rule, envelope encryption of sensitive values, erasure, retention
(docs/security.md)."""
