"""The data plane: events in, validated partitions and features snapshots out."""
