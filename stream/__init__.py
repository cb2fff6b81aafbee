"""Stream I/O and the pipeline: the JSON codec, Kafka clients, dead letters and audit records, the
processor and its observers, the label join, the run loop, checkpointing and replay."""
