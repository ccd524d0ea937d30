"""The search's interchangeable parts: GEPA's small strategy classes.

``selection`` chooses parents, ``sampling`` draws minibatches,
``stopping`` decides when to end and ``proposal`` asks the meta model
for new prompts. Each takes its randomness or its I/O from outside.
"""
