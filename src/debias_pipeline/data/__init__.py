"""Data: the dataset registry, the raw-file loaders, processing from ratings to the train matrix and graph, side features and the simulator."""
