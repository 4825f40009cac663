"""The batch importer: NDJSON and CSV files streamed into confirmed NDJSON messages, resumable."""
