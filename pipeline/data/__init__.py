"""Raw data: manifests, sources (mirrors, wheels, folders), IDX files, the prepared file."""
