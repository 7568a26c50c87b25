"""The in-process SDK: runs, the non-blocking logger and its writer thread, the hardware sampler."""
