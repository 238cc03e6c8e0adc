"""lmstrix: a tested-context registry and a per-host job queue for LM Studio models."""

__version__ = "0.1.0"
