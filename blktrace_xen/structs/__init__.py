"""construct declarations of every wire format: pure data, no I/O.

The single source of truth for byte layouts; the fast NumPy paths in
``decode/`` derive their dtypes and constants from these declarations and are
tested against them.
"""
