"""Helpers that serve the tests and the demo, not the device: loopback stream servers."""
