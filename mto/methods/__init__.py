"""The MIM methods MTO plugs into and the timm ViT they share, in two layers.

Descriptions, torch-free, part of the config layer: ``registry`` (each method by name), ``shared`` (settings
several methods read) and each method folder's ``__init__`` (its description and settings). Models, the layer
above ``objective`` and below ``training``: ``base``, ``attention``, ``backbone``, ``masking``, ``momentum``,
``initialisation`` and each folder's ``model.py``.
"""
