"""The kopf side: thin handlers that fetch, call the pure core, and write back."""
