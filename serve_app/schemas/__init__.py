"""API schemas: request and response bodies, camelCase on the wire."""
