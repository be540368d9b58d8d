"""The MIM methods MTO plugs into and the timm ViT they share. ``registry`` describes each method, torch-free;
each method is a folder of its own (its description in ``__init__``, its model in ``model.py``)."""
