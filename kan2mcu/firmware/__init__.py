"""Firmware for microcontrollers: PlatformIO projects around a generated model folder,
builds, runs under QEMU, and measurement (instructions, cycle ESTIMATE, flash, RAM).

Public entry points: :func:`kan2mcu.firmware.project.write_project`,
:func:`kan2mcu.firmware.measure.measure`, :mod:`kan2mcu.firmware.cli`.
"""
