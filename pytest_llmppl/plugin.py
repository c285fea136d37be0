"""pytest entry point (stub until the plugin issue lands)."""
