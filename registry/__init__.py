"""The model store: names, manifests, blobs, GGUF metadata, Modelfiles and the registry client."""
