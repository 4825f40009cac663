"""The key service's wire contract (docs/contract.md §6): request and answer models, reason codes, limits
and errors. The server builds its answers from it and the client parses answers into it; nothing here
talks to Redis or HTTP."""
