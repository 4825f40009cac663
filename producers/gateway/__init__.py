"""The HTTP gateway: `POST /v1/events` (docs/contract.md §7) in front of the confirmed publisher."""
