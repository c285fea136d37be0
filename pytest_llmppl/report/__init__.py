"""Reporting: the terminal table, JSON and markdown reports, progress, shards' reports joined, the
diff of two committed files, pytest-split's durations.

Imports any stage below; never the session or the plugin.
"""
