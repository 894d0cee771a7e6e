"""``kiosk-image``: build, provision, flash and audit the kiosk's Debian OS image.

Runs on a logistics or build machine, never on a unit. Imports only ``kiosk.protocol``.
"""
