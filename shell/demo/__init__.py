"""`pulseseal demo`: the main job on local defaults, end to end, with everything shown."""
