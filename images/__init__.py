"""Training images: one Dockerfile for CPU and GPU, built through the Docker SDK."""
