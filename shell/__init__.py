"""The application shell: the `pulseseal` command line, the demo, the soak, dev services and credentials,
synthetic traffic and generated docs. It stands on every floor below it; nothing below imports it."""
