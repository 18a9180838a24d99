"""Plotly figures and the self-contained HTML / Markdown incident report."""
