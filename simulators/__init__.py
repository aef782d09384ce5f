"""APNs and FCM provider simulators: real HTTP/2 servers over TLS (see README.md here)."""
