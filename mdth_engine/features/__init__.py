"""Candle features: one spec (``spec``), a vectorised batch path (``batch``) and a live path (``incremental``)."""
