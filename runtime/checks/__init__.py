"""Checks made before any work: the input's layout and values, the bundle's location, the outputs' locations."""
