"""Helpers shared by models/, data/ and the command scripts. Imports neither models nor data."""
