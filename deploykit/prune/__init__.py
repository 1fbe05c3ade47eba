"""Physical channel removal, plans and artifacts."""
