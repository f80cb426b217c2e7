"""Training, assessment and submission: one entrypoint for laptop, container and cluster."""
