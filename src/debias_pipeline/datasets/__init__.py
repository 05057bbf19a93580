"""The catalog's own dataset types: the raw files of a dataset parsed by its loader
(``raw.RawDataset``) and the trained recommenders of a project (``recommenders``)."""
