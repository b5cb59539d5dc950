"""XEP-0363 HTTP File Upload: :mod:`.engine` (pure rules) and :mod:`.module` (service and HTTP)."""
