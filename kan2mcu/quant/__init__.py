"""Quantization: ranges, the planner and its cost model, the strategies, the integer reference."""
