"""Bridges to other frameworks (imported on demand; the engine never needs them)."""
