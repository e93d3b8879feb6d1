"""One reader per on-disk format; millimetres and file encodings stop at this boundary."""
