"""The `corral` command: a client of the HTTP API, with rich output."""
