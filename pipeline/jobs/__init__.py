"""Jobs: submission, queries, client and admin actions, aggregation."""
