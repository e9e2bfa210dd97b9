"""Who may call the service and what they did: API keys and scopes, rate limits, the audit log,
and the ASGI gate that applies them before a request body is read."""
