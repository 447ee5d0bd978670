"""Developer tools: the raw table in place (`make data`), synthetic tables, a local
S3-compatible server, and the offline page for `dvc plots show`."""
