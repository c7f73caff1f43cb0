"""`make bench`: duplex and livekit-agents against one local OpenAI-protocol server.

Entry point: ``python -m bench.run`` (see docs/performance.md for the method).
"""
