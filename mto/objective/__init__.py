"""MTO itself: heterogeneity, its three losses, recalibration and their schedules, as pure functions, and
``plugin.MTOObjective``, which applies them to one stack of ViT blocks (docs/method.md)."""
