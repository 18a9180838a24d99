"""Scenario generators that write the real binary formats."""
