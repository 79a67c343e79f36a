"""Run tracking: the W&B logger, the run record and its reader, secret redaction."""
