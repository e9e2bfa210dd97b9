"""Pure signal processing: tensors in, tensors out. No I/O beyond bytes, no web imports."""
