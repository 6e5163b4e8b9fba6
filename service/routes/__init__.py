"""HTTP routes: thin, each a call into the service's modules."""
