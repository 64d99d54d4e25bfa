"""Buckets: S3 (any S3-compatible endpoint) or the local filesystem, behind one provider."""
