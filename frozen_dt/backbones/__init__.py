"""Frozen LM backbones: :mod:`~frozen_dt.backbones.catalog` (names, depths, ``--layers``; no torch) and
:mod:`~frozen_dt.backbones.slice` (``load_backbone`` -> ``FrozenSlice``: loading, slicing, freezing, caching)."""
