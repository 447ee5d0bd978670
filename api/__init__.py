"""Deploy side of lockserve: the service that answers with exactly the model dvc.lock pins."""
