"""PlatformIO development platform of kan2mcu's emulated boards (see builder/main.py)."""
from platformio.public import PlatformBase


class Kan2mcuqemuPlatform(PlatformBase):
    """Nothing to install: the cross toolchains and QEMU come from the system's packages."""
