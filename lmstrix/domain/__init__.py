"""The pure core of lmstrix: vocabularies, records, budgets, policies and the context search.

Nothing here performs I/O or imports an I/O library (SQLAlchemy, redis, httpx, dramatiq); every
other package may import from here, and this package imports from none of them. That keeps the
logic testable on its own and cheap to import.
"""
