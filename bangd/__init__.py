"""bangd: blocklist imports into fail2ban and a geolocation cache beside it."""

__version__ = "0.1.0"
