"""Data sets: the bundled ones and users' own tables."""
