"""Training MinMo's adapters: data manifests, the alignment stages and the duplex predictor."""
