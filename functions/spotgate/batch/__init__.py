"""OpenAI's Batch API on spot capacity: files, batches, a durable line queue, and its runner."""
