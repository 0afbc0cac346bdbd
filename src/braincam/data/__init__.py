"""The data layer: records (files and labels), decoding, head mask, preprocessing with its cache,
hashing and duplicate groups, splits. Import the submodules directly (kept light here so that
importing one does not pull in OpenCV or scikit-learn)."""
