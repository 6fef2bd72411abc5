"""HTTP handlers, one module per API area."""
