"""Fault injection: ``proxy`` (a TCP proxy for network faults) and ``process`` (signals by PID)."""
