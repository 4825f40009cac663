"""`pulseseal soak`: sustained traffic under a seeded fault schedule, then proof that nothing was lost.

The soak runs its own RabbitMQ, key-store Redis and MongoDB-compatible server (in a home of its own, on
spare ports, through the same `infra/` scripts as `pulseseal services`), so its faults never disturb
anyone else's servers; its own key service, encryptors and gateway; gateway traffic and importer runs
at a steady rate with canary values planted in every free-text, number and time field. Afterwards it
checks that every accepted event is stored once and opens, that the dead-letter queue holds nothing
accepted, that a key-store backup restored over a lost store opens every document (and no shredded
one), and hunts for the canaries in everything that was written to disk. See docs/reliability.md.
"""
