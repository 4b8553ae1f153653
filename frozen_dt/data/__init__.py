"""Offline datasets: the in-memory dataset, readers for each format, sources (files, Minari, downloads, generation) and the sampling views every algorithm shares."""
