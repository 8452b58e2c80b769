"""Test support shared by integration and e2e tests, the demo and benchmarks (real Prometheus, fake
HTTP servers); importable without pytest."""
