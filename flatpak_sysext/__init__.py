"""flatpak-sysext: link the system extensions Flatpak apps declare into systemd-sysext."""

__version__ = "0.1.0"
