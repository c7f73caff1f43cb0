"""WebRTC transport, playground server and browser tests."""
