"""Files in: the dataset scan (:mod:`.dataset`), image decoding (:mod:`.images`, :mod:`.tensors`)
and train/validation/test data splits (:mod:`.splits`)."""
