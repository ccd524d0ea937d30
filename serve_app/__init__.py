"""The HTTP app on Ray Serve, and the command line that runs it."""
