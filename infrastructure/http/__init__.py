"""The HTTP API and the dashboard (docs/http.md, docs/dashboard.md)."""
