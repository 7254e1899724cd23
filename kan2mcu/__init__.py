"""kan2mcu: Kolmogorov-Arnold Networks to bit-exact, low-bit fixed-point C for microcontrollers."""

__version__ = "0.1.0"
