"""The run viewer: one self-contained HTML page per run (`invoke view RUN`)."""
