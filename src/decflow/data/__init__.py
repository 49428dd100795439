"""Tables in and out: reading the source dataset's partitions, validating them, writing and
reading the labels dataset, and generating synthetic and demo sources."""
