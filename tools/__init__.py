"""Developer tools: a local S3-compatible server for tests and trying the s3 remote."""
