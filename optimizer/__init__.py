"""Metaprompt optimization runs."""
