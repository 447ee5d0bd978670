"""Training side of lockserve: one module per DVC stage plus the helpers they share."""
