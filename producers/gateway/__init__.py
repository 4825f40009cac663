"""The HTTP gateway: `POST /v1/events` (contract §7) in front of the confirmed publisher."""
