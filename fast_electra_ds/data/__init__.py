"""Text -> token ids -> packed indexed datasets -> shuffled, sharded batches."""
