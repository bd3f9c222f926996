"""Example services for the demo stack and the example images."""
