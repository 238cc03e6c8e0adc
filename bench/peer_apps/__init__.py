"""What a user would write instead of lmstrix, for bench/peers.py: one task that sends a chat
request to a host and returns the answer, on plain dramatiq and on Celery."""
