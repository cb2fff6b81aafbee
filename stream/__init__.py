"""Stream I/O: the event schema, the JSON codec, Kafka clients, dead letters and the run loop."""
