"""Worker: executors per runtime, dynamic batcher, replica cache, HTTP server."""
