"""Test support: local servers and HTTP helpers."""
