"""What the tools share: building detectors, timing, FLOPs, the machine's name, config loading and
the CPU process group. One concept per module; nothing here is part of the model."""
