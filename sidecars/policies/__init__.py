"""Sans-IO resilience policies: plain objects driven by calls and a clock, never sockets."""
