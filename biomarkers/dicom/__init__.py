"""DICOM ingest: index, qualify, convert images; rasterise segmentations onto image grids."""
