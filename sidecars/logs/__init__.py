"""The log adapter: sources -> framing -> parse -> normalise -> buffer -> sinks."""
