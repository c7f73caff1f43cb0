"""Servers that expose duplex backends over other protocols."""
