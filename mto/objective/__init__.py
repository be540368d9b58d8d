"""The objective layer, above ``config`` and ``data`` and below the models (``mto.methods``): MTO itself.

Heterogeneity (with ``masked_first_order``, the masked-first token order), its three losses, recalibration and
the schedules over time, as pure functions; ``capture.LayerCapture``, what a run of ViT blocks kept; and
``plugin.MTOObjective``, which turns a capture into the losses for one stack of blocks (docs/method.md).
"""
