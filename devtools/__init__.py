"""Development-only tools, never shipped: the local AWS server behind `make dev` and the tests."""
