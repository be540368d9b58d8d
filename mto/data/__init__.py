"""Images on the device: the data sets (``datasets``), their seeded splits and the on-device augmentation."""
