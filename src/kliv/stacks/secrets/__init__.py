"""ProjectSecrets: envelope-encrypted versions in Postgres, or AWS Secrets Manager."""
