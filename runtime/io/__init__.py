"""Reading and writing: NIfTI in and out (streamed, atomic), the geometry of upstream's flips/crop/zoom, checksums."""
