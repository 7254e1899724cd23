"""Training: the float fit loop, own-data training and quantization-aware fine-tuning."""
