"""Training: ``Trainer`` (one trial's state and the one epoch loop every Ray trial goes through), ``run_trial``,
fused units of K trials as one stacked model, fine-tuning, weight-decay groups and the frozen-feature probes."""
